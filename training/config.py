"""Typed training configuration: a YAML file plus `section.key=value` overrides, validated up front.

    python training/train.py --config training/configs/sft.yaml optim.lr=5e-5 data.scenes=2

Every field has a type and a range; a typo or a bad value fails before any model or data loads,
with the field's path in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from manifests.hints import did_you_mean
from manifests.store import Location


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # .inf or .nan anywhere is refused at the door


class LoraConfig(_Section):
    """LoRA adapters (PEFT) on the transformer: the base frozen in the training dtype, only the
    adapters trained, checkpointed and exported (model/lora.py)."""

    rank: int = Field(default=32, ge=1)  # the adapters' rank (Wan trainers use 16-64)
    alpha: float = Field(default=32.0, gt=0)  # scale alpha / rank on the adapters' output
    dropout: float = Field(default=0.0, ge=0, lt=1)
    targets: list[str] | None = None  # module-name suffixes; None: attention q/k/v/out and feed-forward of every block
    init: Literal["default", "gaussian"] = "default"  # PEFT's init: default (B = 0, A Kaiming) or gaussian
    merge: bool = False  # also export a merged full transformer folder (loads with from_pretrained)


class ModelConfig(_Section):
    path: Path  # a CogVideoX- or Wan-layout folder (text encoder, VAE, scheduler; transformer unless `transformer` is set)
    family: Literal["auto", "cogvideox", "wan"] = "auto"  # auto: read from path/model_index.json
    transformer: Path | None = None  # weights-only start: an exported Mask²DiT (or stock) transformer folder
    expert: Literal["transformer", "transformer_2"] = "transformer"  # Wan2.2-A14B: the expert to train
    create_tiny: bool = False  # build a tiny random model of `family` at `path` if it does not exist (smoke runs)
    attention_backend: Literal["segmented", "dense", "flex"] = "segmented"  # Wan: segmented or dense
    self_attention: Literal["full", "sparse"] = "full"  # Wan: all video sees all video, or HoloCine's sparse
    sparse_tokens: int = Field(default=256, ge=1)  # Wan sparse: tokens of every scene that all scenes see
    rope_scheme: Literal["consecutive", "restart", "jump"] | None = None  # Wan; None: the checkpoint's (consecutive)
    gradient_checkpointing: bool = True  # recompute activations in the backward pass: far less memory, ~30% more time
    lora: LoraConfig | None = None  # train LoRA adapters instead of the full transformer (one GPU)


class DataConfig(_Section):
    manifest: Location  # curation output directory, local or s3://bucket/prefix (manifests.store)
    stage: Literal["pretrain", "sft"] = "pretrain"  # pretrain: concatenated single shots; sft: curated combinations
    scenes: int = Field(default=3, ge=1)  # scenes per sample (pretrain: shots concatenated)
    num_frames: int = Field(default=49, ge=1)  # frames per scene (4k+1)
    max_stride: int = Field(default=3, ge=1)  # frame stride limit (the official video_sample_stride)
    # official: the official datasets' windows, a random start drawn per (seed, sample, scene):
    #   pretrain stride max_stride inside the 5-95% part of the shot, SFT the largest stride <= max_stride
    #   that fits; middle: one fixed window per shot at the stride nearest target_fps (needed by precompute)
    frame_window: Literal["official", "middle"] = "official"
    target_fps: float = Field(default=8.0, gt=0)  # frame_window=middle: the effective frame rate
    # equal: every scene num_frames; from_shots: as many frames as each shot supports (4k+1, at most
    # num_frames, at least min_frames), passed to the model per scene; batches group equal layouts.
    scene_frames: Literal["equal", "from_shots"] = "equal"
    min_frames: int = Field(default=9, ge=1)  # scene_frames=from_shots: the shortest scene (4k+1 frames)
    height: int = Field(default=480, ge=8)  # pixels of every scene (centre crop, then resize)
    width: int = Field(default=720, ge=8)  # pixels of every scene (720 for CogVideoX, 832 for Wan)
    caption_dropout: float = Field(default=0.0, ge=0, le=1)  # per scene; the official recipe uses none
    crop_bars: bool = True  # read each shot's active picture only (its crop_* columns: no black bars)
    allow_uncaptioned: bool = False  # smoke runs without Gemini: train on empty captions, never invented ones
    precomputed: Location | None = None  # latents/text embeddings from training/precompute.py (local or s3://)
    num_workers: int = Field(default=2, ge=0)  # data-loader processes decoding frames (0: in the training process)
    # Samples whose source video cannot be read are replaced (deterministically) and counted; past
    # this share of the samples drawn (after the first 20 skips) training stops with the reasons.
    max_skipped_fraction: float = Field(default=0.05, ge=0, le=1)

    @field_validator("num_frames", "min_frames")
    @classmethod
    def _frames_fit_the_vae(cls, value: int) -> int:
        if (value - 1) % 4:
            raise ValueError(f"must be 4k+1 (the CogVideoX and Wan VAEs compress time 4x), got {value}")
        return value


class ObjectiveConfig(_Section):
    cond_prob: float = Field(default=0.0, ge=0, le=1)  # SFT: share of conditional (clean context) samples
    # CogVideoX (v-prediction): 1 / (1 - alpha_bar_t) as CogVideoX trains, or none. Wan ignores it.
    loss_weighting: Literal["cogvideox", "none"] = "cogvideox"
    # Wan (flow matching): the timestep shift; None takes the model folder's scheduler flow_shift (else 5.0).
    flow_shift: float | None = Field(default=None, gt=0)


class OptimConfig(_Section):
    """AdamW, linear warm-up then constant: the official launchers' values are the defaults."""

    lr: float = Field(default=1e-5, gt=0)  # peak learning rate (after warm-up)
    weight_decay: float = Field(default=3e-2, ge=0)  # AdamW weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW betas
    eps: float = Field(default=1e-10, gt=0)  # AdamW epsilon
    warmup_steps: int = Field(default=100, ge=0)  # linear warm-up steps, then constant
    max_grad_norm: float = Field(default=0.05, gt=0)  # gradient clipping norm
    batch_size: int = Field(default=1, ge=1)  # per GPU
    gradient_accumulation: int = Field(default=1, ge=1)  # micro-batches per optimizer step


class RunConfig(_Section):
    output: Path  # run directory: checkpoints/, export/, tensorboard/, validation/
    max_steps: int = Field(default=10000, ge=1)  # optimizer steps in all (a resumed run continues up to it)
    seed: int = 42  # every sample, window and noise draw is a function of (seed, sample index)
    precision: Literal["bf16", "fp32"] = "bf16"  # compute precision (no fp16)
    zero_stage: Literal[0, 1, 2, 3] = 2  # DeepSpeed ZeRO stage (3 shards the weights too)
    offload_optimizer: bool = False  # ZeRO-3 + CPU offload, for small-memory GPUs
    deepspeed_config: Path | None = None  # a full DeepSpeed JSON instead of the generated one
    save_every: int = Field(default=500, ge=1)  # steps between checkpoints
    keep_last: int = Field(default=3, ge=1)  # checkpoints kept (older ones are deleted)
    log_every: int = Field(default=10, ge=1)  # steps between TensorBoard/console logs
    resume: bool = True  # continue from the latest checkpoint in output/checkpoints when there is one
    export_components: Literal["copy", "symlink"] = "copy"  # copy: hard links where possible, portable
    # Ranks that share one sample (Ulysses sequence parallelism over the dual-mask attention);
    # data parallelism runs across the groups. Must divide the world size and the attention heads.
    sequence_parallel: int = Field(default=1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when available


class ValidationConfig(_Section):
    every: int = Field(default=0, ge=0)  # 0: never
    prompts: list[str] = Field(default_factory=list)  # one scene per prompt
    steps: int = Field(default=25, ge=1)  # denoising steps of each validation video
    guidance_scale: float = 6.0  # classifier-free guidance of validation videos (6 CogVideoX, 5 Wan)
    clip: Path | None = None  # a local CLIP folder: score each validation video with training.evaluate's metrics


class TrainConfig(_Section):
    model: ModelConfig
    data: DataConfig
    objective: ObjectiveConfig = ObjectiveConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig
    validation: ValidationConfig = ValidationConfig()

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.data.stage == "pretrain" and self.objective.cond_prob > 0:
            raise ValueError("objective.cond_prob applies to SFT; pretraining uses the attention mask only")
        if self.data.precomputed and self.data.frame_window != "middle":
            raise ValueError("data.precomputed holds one fixed window per shot: set data.frame_window=middle "
                             "(as training/precompute.py was run with)")  # fmt: skip
        if self.offload_needs_zero3():
            raise ValueError("run.offload_optimizer needs run.zero_stage=3")
        return self

    def offload_needs_zero3(self) -> bool:
        return self.run.offload_optimizer and self.run.zero_stage != 3


SECTIONS = {"model": ModelConfig, "data": DataConfig, "objective": ObjectiveConfig, "optim": OptimConfig,
            "run": RunConfig, "validation": ValidationConfig}  # fmt: skip


def _comments() -> dict[str, str]:
    """field name -> its comment in this file (the help of each key; one place for it)."""
    import re

    found, section, above = {}, None, []
    for line in Path(__file__).read_text().splitlines():
        head = re.match(r"class (\w+)\(_Section\)", line)
        if head:
            section, above = head.group(1), []
            continue
        comment = re.match(r"    #\s?(.*)$", line)
        if comment:
            above.append(comment.group(1).strip())
            continue
        field = re.match(r"    (\w+): .*?(?:#\s*(.*))?$", line)
        if section and field:
            text = field.group(2) or " ".join(above)  # a trailing comment, else the comment lines above
            if text:
                found[f"{section}.{field.group(1)}"] = text.strip()
        above = []
    return found


def config_keys() -> list[tuple[str, str, str]]:
    """(section.key, default, help) of every config key, for --help-config."""
    comments, rows = _comments(), []
    for name, section in SECTIONS.items():
        for key, field in section.model_fields.items():
            default = "(required)" if field.is_required() else repr(field.get_default(call_default_factory=True))
            rows.append((f"{name}.{key}", default, comments.get(f"{section.__name__}.{key}", "")))
    return rows


def _problem(error: dict) -> str:
    """One pydantic error as 'section.key: what is wrong', with a suggestion for an unknown key."""
    loc = [str(part) for part in error["loc"]]
    where = ".".join(loc)
    if error["type"] == "extra_forbidden":
        if len(loc) == 1:
            return f"{where}: unknown section{did_you_mean(loc[0], SECTIONS)}; sections: {', '.join(SECTIONS)}"
        section = SECTIONS.get(loc[0])
        keys = [f"{loc[0]}.{k}" for k in section.model_fields] if section else []
        return f"{where}: unknown key{did_you_mean(where, keys)}"
    return f"{where}: {error['msg']}"


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read YAML, apply `a.b=value` overrides (values parsed as YAML), validate. Raises ValueError."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as err:
        raise ValueError(f"{path}: config file not found") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML: {err}") from err
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value")
        key, raw = item.split("=", 1)
        _set(tree, key.strip(), yaml.safe_load(raw))
    base = path.parent
    for section, key in (("model", "path"), ("model", "transformer"), ("data", "manifest"), ("data", "precomputed"),
                         ("run", "output"), ("run", "deepspeed_config")):  # fmt: skip
        value = tree.get(section, {}).get(key) if isinstance(tree.get(section), dict) else None
        if isinstance(value, str) and not Path(value).is_absolute() and value.startswith(("./", "../")):
            tree[section][key] = str((base / value).resolve())  # ./x is relative to the config file
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(_problem(e) for e in err.errors())
        raise ValueError(f"{path}: invalid config: {problems}") from err


def transformer_weights(config: TrainConfig) -> Path:
    """The folder the transformer starts from: model.transformer, else the model's (expert's) own. The
    one rule: training, precomputing and validation all take the text length from these weights."""
    return config.model.transformer or (config.model.path / config.model.expert)
