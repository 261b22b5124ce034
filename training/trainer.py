"""The trainer: components built from one config, and a loop that reads like the algorithm.

    trainer = Trainer(load_config("training/configs/sft.yaml"))
    trainer.train()

Components, each in its own module: data (`training.data`), encoders or the precomputed store
(`training.latent_store`, `training.encoding`), the objective (`training.objective`), the DeepSpeed
engine (`training.engine`), checkpoints (`training.checkpoint.Checkpointer`), metrics
(`training.telemetry.Metrics`) and validation (`training.validate.Validator`).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from model.families import family_of
from model.sequence_parallel import SequenceShard
from training.checkpoint import Checkpointer
from training.config import TrainConfig, transformer_weights
from training.data import DataError, LayoutBatchSampler, SceneDataset, collate, load_samples
from training.encoding import BatchEncoder
from training.engine import build_engine, setup_distributed
from training.interrupt import (
    NonFiniteLoss,
    StopRequests,
    TrainingInterrupted,
    any_rank,
    ignore_interrupts_in_workers,
)
from training.latent_store import LatentStore
from training.memory import memory_plan
from training.objective import conditional_mask
from training.telemetry import Metrics, peak_memory_gib


def lora_base(config: TrainConfig) -> Path:
    """The model folder a LoRA run's adapters sit on: the export its transformer comes from, or the base."""
    weights = transformer_weights(config)
    return weights.parent if (weights.parent / "model_index.json").is_file() else config.model.path


def load_model(config: TrainConfig, family):
    """(transformer in training mode, objective) for this config's backbone."""
    model = config.model
    transformer = family.load_transformer(transformer_weights(config), attention_backend=model.attention_backend,
                                          self_attention=model.self_attention, sparse_tokens=model.sparse_tokens,
                                          rope_scheme=model.rope_scheme)  # fmt: skip
    if model.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    if model.lora is not None:  # the base frozen; only the adapters train, checkpoint and export
        from model.lora import add_lora

        lora = model.lora
        torch.manual_seed(config.run.seed)  # the adapters' initial A: the same in every run of this seed
        add_lora(transformer, lora.rank, lora.alpha, lora.dropout, lora.targets, lora.init, family.name)
    objective = family.objective(model.path, weighting=config.objective.loss_weighting,
                                 flow_shift=config.objective.flow_shift, expert=model.expert)  # fmt: skip
    return transformer.train(), objective


class Trainer:
    def __init__(self, config: TrainConfig):
        self.config = config
        samples, report = load_samples(config.data)  # fails fast, before any model loads
        self.device, self.rank, self.world = setup_distributed(config)
        self.is_main = self.rank == 0
        if self.is_main:
            print("\n".join(report.lines()), flush=True)
        if config.model.create_tiny and not config.model.path.exists() and self.is_main:
            family_of(config.model.path, "cogvideox" if config.model.family == "auto" else config.model.family
                      ).build_tiny(config.model.path)  # fmt: skip
        torch.distributed.barrier()
        self.family = family_of(config.model.path, config.model.family)
        self.dtype = torch.bfloat16 if config.run.precision == "bf16" else torch.float32
        if self.is_main:  # a 5B or 14B checkpoint takes a while to read: say so before the silence
            print(f"loading the {self.family.name} transformer and its encoders from {config.model.path} ...",
                  flush=True)  # fmt: skip
        self.transformer, self.objective = load_model(config, self.family)
        # Sequence parallelism: groups of P consecutive ranks share a sample; data parallel across groups.
        self.dp_rank, self.dp_world = (
            self.rank // config.run.sequence_parallel,
            self.world // config.run.sequence_parallel,
        )
        self.transformer.enable_sequence_parallel(sequence_group(config.run.sequence_parallel, self.rank, self.world))
        store = LatentStore(config.data.precomputed) if config.data.precomputed else None
        text_length = self.family.text_length(config.model.path, transformer_weights(config))
        self.encoders = None if store else self.family.encoders(config.model.path, self.device, self.dtype, text_length)
        self.encode = BatchEncoder(config, self.encoders, store, store.identity if store else self.encoders.identity)
        self.engine, self.schedule = build_engine(self.transformer, config)
        run = config.run.output
        self.checkpointer = Checkpointer(run / "checkpoints", config.run.keep_last, self.rank,
                                         config.run.export_components, adapters_only=config.model.lora is not None)  # fmt: skip
        if self.is_main:
            print(memory_plan(self.transformer, config, self.family), flush=True)
        from training.checkpoint import checkpoint_tags
        from training.identity import check_identity, run_identity

        resuming = config.run.resume and bool(checkpoint_tags(run / "checkpoints"))
        identity = run_identity(config, samples, self.family.name)
        check_identity(run, identity, resuming, write=self.is_main)  # before another training's checkpoint loads
        self.step, self.consumed = self.checkpointer.resume(self.engine) if resuming else (0, 0)
        self.resumed_from = self.step
        if self.step and self.is_main:
            print(f"resumed from step {self.step} of {config.run.max_steps} ({run / 'checkpoints'})", flush=True)
        self.history = earlier_history(run / "history.json", self.step) if self.step else []
        self.skips = SkipCounter(config.data.max_skipped_fraction, self.consumed)
        self.metrics = Metrics(run / "tensorboard", self.is_main, config.run.max_steps, self.step)
        dataset = SceneDataset(config.data, samples, config.run.seed, load_frames=store is None)
        batches = LayoutBatchSampler(dataset, self.consumed, self.dp_rank, self.dp_world, config.optim.batch_size)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batches, collate_fn=collate, num_workers=config.data.num_workers,
            persistent_workers=config.data.num_workers > 0,
            worker_init_fn=ignore_interrupts_in_workers if config.data.num_workers > 0 else None,
        )  # fmt: skip
        self.validator = None
        if config.validation.every and config.validation.prompts and self.is_main:
            from training.validate import Validator  # loads CLIP: only for runs that validate

            self.validator = Validator(config, self.family, self.engine.module, self.encoders, self.device, self.dtype)

    @property
    def global_batch(self) -> int:
        return self.config.optim.batch_size * self.config.optim.gradient_accumulation * self.dp_world

    def train(self) -> dict:
        config, run = self.config, self.config.run.output
        if self.resumed_from >= config.run.max_steps:
            if self.is_main:
                print(f"{run} is already finished: step {self.step} of {config.run.max_steps}; nothing trained, and "
                      f"its export ({run / 'export'}) is left as it is. Raise run.max_steps to train on, or give a new "
                      "run.output", flush=True)  # fmt: skip
            self.metrics.close()
            return {"step": self.step, "consumed": self.consumed, "history": self.history}
        began = time.perf_counter()
        with StopRequests(announce=self.is_main) as stop:
            self.steps(stop)
        self.metrics.close()
        if config.model.lora is None or config.model.lora.merge:
            self.checkpointer.export(self.engine, config.model.path, run / "export", config.run.zero_stage,
                                     config.model.expert, self.family.components, merge_lora=config.model.lora)  # fmt: skip
        if config.model.lora is not None and self.is_main:
            from model.lora import save_lora

            lora = config.model.lora
            save_lora(self.engine.module, run / "export" / "lora", lora.rank, lora.alpha, self.family.name,
                      str(transformer_weights(config)))  # fmt: skip
        if self.is_main:
            self.write_history()
            print(self.summary(time.perf_counter() - began), flush=True)
        return {"step": self.step, "consumed": self.consumed, "history": self.history}

    def steps(self, stop: StopRequests) -> None:
        """Optimizer steps up to run.max_steps; a stop request ends them at a step boundary, after a checkpoint."""
        config = self.config
        batches = iter(self.loader)
        while self.step < config.run.max_steps:
            results = [self.train_step(self.next_batch(batches)) for _ in range(config.optim.gradient_accumulation)]
            self.step += 1
            self.consumed += self.global_batch
            self.log(results)
            # One all-reduce a step: a non-finite loss on any rank, a stop request on any rank.
            nonfinite, stopping = any_rank([not all(math.isfinite(loss) for loss, _ in results), stop.requested],
                                           self.device)  # fmt: skip
            if nonfinite:
                self.metrics.close()
                raise NonFiniteLoss(
                    f"the loss is {self.history[-1]['loss']} at step {self.step} of run.output {config.run.output}: the "
                    "run stops here without saving this step or exporting. Lower optim.lr (or raise optim.warmup_steps, "
                    "lower optim.max_grad_norm) and resume from the last checkpoint, or check the data"
                )
            saved = self.step % config.run.save_every == 0 or self.step == config.run.max_steps
            if saved:
                self.save()
            if self.validator and self.step % config.validation.every == 0:
                scores = self.validator(self.step)
                self.metrics.scalars(self.step, {f"validation/{name}": value for name, value in scores.items()})
            if stopping:
                if not saved:
                    self.save()
                self.metrics.close()
                raise TrainingInterrupted(self.step, config.run.max_steps, self.checkpointer.folder, self.is_main)

    def save(self) -> None:
        """A checkpoint of this step, and the history up to it (a resumed run continues both)."""
        self.checkpointer.save(self.engine, self.step, self.consumed)
        if self.is_main:
            self.write_history()

    def write_history(self) -> None:
        from manifests.io import write_json_atomic

        write_json_atomic(self.config.run.output / "history.json", self.history)

    def summary(self, seconds: float) -> str:
        """What the run did and where everything is, at the end of training."""
        config, run = self.config, self.config.run.output
        recent = [h["loss"] for h in self.history[-10:]]
        lines = [
            f"done: trained steps {self.resumed_from + 1}-{self.step} of {config.run.max_steps} in {seconds:.1f} s"
            + (f" (resumed from step {self.resumed_from})" if self.resumed_from else ""),
            f"  final loss {sum(recent) / len(recent):.4f} (mean of the last {len(recent)} steps)" if recent else "",
            f"  checkpoints: {run / 'checkpoints'}",
            f"  inference folder: {run / 'export'}  (python -m model.generate --model {run / 'export'} ...)"
            if config.model.lora is None or config.model.lora.merge
            else "",
            f"  LoRA: {run / 'export' / 'lora'}  (python -m model.generate --model {lora_base(config)} --lora "
            f"{run / 'export' / 'lora'} ...; {', '.join(self.family.lora_files)})"
            if config.model.lora is not None
            else "",
        ]
        if self.validator:
            lines.append(f"  validation videos: {run / 'validation'}")
        lines.append(f"  curves: tensorboard --logdir {run / 'tensorboard'}")
        return "\n".join(line for line in lines if line)

    def next_batch(self, batches) -> dict:
        with self.metrics.timing_data():
            batch = next(batches)
        self.skips.add(batch, self.step, self.is_main)
        return batch

    def train_step(self, batch: dict) -> tuple[float, torch.Tensor]:
        """One micro-batch: encode, noise (clean context scenes for the conditional task), predict
        with this backbone, step. Returns (loss, per-scene loss of the generated scenes (S,), NaN for context scenes)."""
        config, device = self.config, self.device
        latents, text, scene_frames = self.encode(batch, device, self.dtype)
        clean = conditional_mask(batch["index"], len(scene_frames), config.objective.cond_prob, config.run.seed)
        generator = torch.Generator().manual_seed(config.run.seed * 1_000_003 + batch["index"][0])
        inputs = self.objective.make_inputs(latents, scene_frames, clean, generator)
        scene_text = [text.shape[1] // len(scene_frames)] * len(scene_frames)
        output = self.family.predict(self.transformer, self.engine, inputs, text, scene_frames, scene_text)
        loss, scene_losses = self.objective.loss(output, inputs, scene_frames)
        self.engine.backward(loss)
        self.engine.step()
        self.metrics.count_batch(latents.shape[0], self.family.video_tokens(latents, self.transformer.config), text,
                                 self.dp_world)  # fmt: skip
        return loss.item(), scene_losses.detach().where(~inputs.clean, torch.nan).nanmean(0)

    def log(self, results: list[tuple[float, torch.Tensor]]) -> None:
        losses, per_scene = zip(*results)
        scalars = {"loss": sum(losses) / len(losses), "lr": self.schedule.get_last_lr()[0],
                   "grad_norm": float(self.engine.get_global_grad_norm() or 0.0),
                   "peak_memory_gib": peak_memory_gib(self.device), "skipped_samples": self.skips.total}  # fmt: skip
        scene_means = torch.stack(per_scene).nanmean(0)  # context scenes have no loss: not logged
        scalars |= {f"loss_scene_{i}": float(v) for i, v in enumerate(scene_means) if not torch.isnan(v)}
        last = self.step == self.config.run.max_steps
        logged = self.metrics.step(self.step, scalars, log=self.step % self.config.run.log_every == 0 or last)
        self.history.append({"step": self.step, "loss": scalars["loss"], "consumed": self.consumed}
                            | ({"logged": logged} if logged else {}))  # fmt: skip


def sequence_group(size: int, rank: int, world: int) -> SequenceShard | None:
    """This rank's sequence-parallel group of `size` consecutive ranks (every rank creates every group,
    as torch.distributed requires); None without sequence parallelism."""
    if size == 1:
        return None
    if world % size:
        raise ValueError(f"run.sequence_parallel={size} must divide the number of ranks ({world})")
    groups = [torch.distributed.new_group(list(range(start, start + size))) for start in range(0, world, size)]
    return SequenceShard(groups[rank // size], rank % size, size)


class SkipCounter:
    """Counts samples replaced because their source could not be read; stops a run that skips too many."""

    def __init__(self, max_fraction: float, consumed: int, grace: int = 20):
        self.max_fraction, self.grace, self.total, self.drawn = max_fraction, grace, 0, consumed

    def add(self, batch: dict, step: int, verbose: bool) -> None:
        reasons = [reason for item in batch["skipped"] for reason in item]
        self.drawn += len(batch["index"])
        if not reasons:
            return
        self.total += len(reasons)
        if verbose:
            print(f"step {step + 1}: skipped {len(reasons)} unreadable sample(s), {self.total} so far: {reasons[0]}",
                  flush=True)  # fmt: skip
        if self.total > self.grace and self.total > self.max_fraction * self.drawn:
            raise DataError(
                f"{self.total} of {self.drawn} samples could not be read (more than data.max_skipped_fraction="
                f"{self.max_fraction}); the source videos changed since curation. Last: {reasons[-1]}"
            )


def earlier_history(path: Path, step: int) -> list[dict]:
    """The history a resumed run continues: the steps up to the checkpoint it resumed from."""
    try:
        return [h for h in json.loads(path.read_text()) if h["step"] <= step]
    except (OSError, ValueError, KeyError, TypeError):
        return []
