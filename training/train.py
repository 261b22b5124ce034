"""Mask²DiT training, both stages: pretrain (concatenated single shots) and SFT (curated combinations).

    deepspeed training/train.py --config training/configs/pretrain.yaml
    deepspeed --hostfile hosts training/train.py --config training/configs/sft.yaml
    torchrun --nproc-per-node 8 training/train.py --config training/configs/sft.yaml optim.lr=5e-6
    python training/train.py --config training/configs/tiny.yaml          # one process, CPU works

The stages differ by config (data.stage, objective.cond_prob) and sampler, not by code.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import time

import torch

from training.checkpoint import CheckpointError
from training.config import TrainConfig, load_config
from training.data import DataError, SceneDataset, StreamSampler, collate, load_samples


def load_model(config: TrainConfig):
    from diffusers import CogVideoXDDIMScheduler

    from model import Mask2DiTTransformer3DModel

    weights = config.model.transformer or (config.model.path / "transformer")
    transformer = Mask2DiTTransformer3DModel.from_pretrained(weights, attention_backend=config.model.attention_backend)
    if config.model.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    scheduler = CogVideoXDDIMScheduler.from_pretrained(config.model.path, subfolder="scheduler")
    return transformer.train(), scheduler


def train(config: TrainConfig) -> dict:
    from training import checkpoint
    from training.batches import BatchEncoder
    from training.encoding import Encoders, LatentStore
    from training.engine import build_engine, setup_distributed
    from training.metrics import Metrics, peak_memory_gib
    from training.objective import conditional_mask, diffusion_loss, make_inputs

    samples, report = load_samples(config.data)  # fails fast, before any model loads
    device, rank, world = setup_distributed(config)
    is_main = rank == 0
    if is_main:
        print("\n".join(report.lines()), flush=True)
    if config.model.create_tiny and not config.model.path.exists() and is_main:
        from model.tiny import build_tiny_model

        build_tiny_model(config.model.path)
    torch.distributed.barrier()
    dtype = torch.bfloat16 if config.run.precision == "bf16" else torch.float32
    transformer, scheduler = load_model(config)
    text_length = transformer.config.max_text_seq_length
    store = LatentStore(config.data.precomputed) if config.data.precomputed else None
    encoders = Encoders(config.model.path, device, dtype, text_length) if store is None else None
    identity = (
        encoders.identity
        if encoders
        else json.loads((config.data.precomputed / "identity.json").read_text())["identity"]
    )
    encode = BatchEncoder(config, encoders, store, identity)
    engine, schedule = build_engine(transformer, config)

    run = config.run.output
    step, consumed = checkpoint.resume(engine, run / "checkpoints", rank) if config.run.resume else (0, 0)
    global_batch = config.optim.batch_size * config.optim.gradient_accumulation * world
    dataset = SceneDataset(config.data, samples, config.run.seed, load_frames=store is None)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.optim.batch_size, sampler=StreamSampler(consumed, rank, world), collate_fn=collate,
        num_workers=config.data.num_workers, persistent_workers=config.data.num_workers > 0,
    )  # fmt: skip
    batches = iter(loader)
    metrics = Metrics(run / "tensorboard", is_main, config.run.max_steps, step)
    history = earlier_history(run / "history.json", step) if step else []
    skips = SkipCounter(config.data.max_skipped_fraction, consumed)
    while step < config.run.max_steps:
        per_scene, losses = [], []
        for _ in range(config.optim.gradient_accumulation):
            waited = time.perf_counter()
            batch = next(batches)
            metrics.waited(time.perf_counter() - waited)
            skips.add(batch, step, is_main)
            latents, text = encode(batch, device, dtype)
            scenes = len(batch["captions"][0])
            scene_frames = [latents.shape[1] // scenes] * scenes
            clean = conditional_mask(batch["index"], scenes, config.objective.cond_prob, config.run.seed)
            generator = torch.Generator().manual_seed(config.run.seed * 1_000_003 + batch["index"][0])
            inputs = make_inputs(latents, scene_frames, clean, scheduler, generator)
            rope = transformer.prepare_rotary_emb(scene_frames, latents.shape[-2], latents.shape[-1], device=device)
            output = engine(hidden_states=inputs.noisy, encoder_hidden_states=text, timestep=inputs.timesteps,
                            image_rotary_emb=rope, scene_frames=scene_frames, clean_scenes=clean, return_dict=False)[0]  # fmt: skip
            loss, scene_losses = diffusion_loss(
                output, inputs, scene_frames, scheduler, config.objective.loss_weighting
            )
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            per_scene.append(scene_losses.detach().where(~inputs.clean, torch.nan).nanmean(0))
            p, p_t = transformer.config.patch_size, transformer.config.patch_size_t or 1
            tokens = latents.shape[1] // p_t * (latents.shape[-2] // p) * (latents.shape[-1] // p)
            metrics.add(latents.shape[0] * world, (tokens + text.shape[1]) * latents.shape[0] * world)
        step += 1
        consumed += global_batch
        scalars = {"loss": sum(losses) / len(losses), "lr": schedule.get_last_lr()[0],
                   "grad_norm": float(engine.get_global_grad_norm() or 0.0), "peak_memory_gib": peak_memory_gib(device)}  # fmt: skip
        scalars |= {
            f"loss_scene_{i}": float(v) for i, v in enumerate(torch.stack(per_scene).nanmean(0)) if not torch.isnan(v)
        }  # clean context scenes have no loss: nothing to log
        scalars["skipped_samples"] = skips.total
        logged = metrics.step(step, scalars, log=step % config.run.log_every == 0 or step == config.run.max_steps)
        history.append(
            {"step": step, "loss": scalars["loss"], "consumed": consumed} | ({"logged": logged} if logged else {})
        )
        if step % config.run.save_every == 0 or step == config.run.max_steps:
            checkpoint.save(engine, run / "checkpoints", step, consumed, config.run.keep_last, is_main, rank)
        if config.validation.every and step % config.validation.every == 0 and is_main:
            from training.validate import validation_samples

            scores = validation_samples(engine.module, config, step, device, dtype)
            metrics.scalars(step, {f"validation/{name}": value for name, value in scores.items()})
    metrics.close()
    checkpoint.export(engine, config.model.path, run / "export", config.run.zero_stage, is_main,
                      config.run.export_components)  # fmt: skip
    if is_main:
        (run / "history.json").write_text(json.dumps(history, indent=1))
        print(
            f"done: {step} steps; checkpoints in {run / 'checkpoints'}, inference folder {run / 'export'}", flush=True
        )
    return {"step": step, "consumed": consumed, "history": history}


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-5 run.max_steps=100")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        train(config)
    except (ValueError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
