"""Typed, validated configuration of the curation job (built from the command line)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# PySceneDetect's own defaults, so `--detector X` alone finds what `scenedetect detect-X` finds.
DEFAULT_THRESHOLDS = {"adaptive": 3.0, "content": 27.0}


class DetectorConfig(BaseModel):
    """How shots are cut. `threshold` is adaptive_threshold (adaptive) or threshold (content)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["adaptive", "content"] = "adaptive"
    threshold: float | None = Field(default=None, gt=0)
    min_scene_frames: int = Field(default=15, ge=1)
    downscale_width: int = Field(default=256, ge=16)  # PySceneDetect's auto-downscale target width

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else DEFAULT_THRESHOLDS[self.kind]

    @property
    def name(self) -> str:
        return f"{self.kind}(threshold={self.effective_threshold:g},min_scene_frames={self.min_scene_frames})"


class CurationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: list[Path] = Field(default_factory=list)
    output: Path
    clip_minutes: float = Field(default=10.0, gt=0)
    overlap_seconds: float = Field(default=2.0, ge=0)
    detector: DetectorConfig = DetectorConfig()
    min_shot_seconds: float = Field(default=2.0, ge=0)
    keyframe_max_side: int = Field(default=384, ge=32)
    keyframe_interval_seconds: float = Field(default=0.5, gt=0)
    decode_threads: int = Field(default=2, ge=0)  # per clip task; 0 = FFmpeg's choice
    cpus_per_task: float = Field(default=1.0, gt=0)
    max_in_flight: int | None = Field(default=None, ge=1)
    num_cpus: int | None = Field(default=None, ge=1)  # only for a local Ray started by the job
    sample_videos: int = Field(default=3, ge=1)  # generated when no --input is given
    retry_failed: bool = True
    # Shot relevance: embeddings and combination mining.
    embedder: Literal["viclip", "clip", "color"] = "color"
    viclip_checkpoint: Path | None = None
    clip_checkpoint: Path | None = None
    embed_batch: int = Field(default=16, ge=1)
    scenes: int = Field(default=3, ge=2)
    within: Literal["clip", "video"] = "clip"
    min_shot_frames: int = Field(default=49, ge=1)
    min_relevance: float = 0.5
    duplicate_threshold: float = Field(default=0.95, gt=0, le=1.0)
    max_uses: int = Field(default=2, ge=1)
    neighbors: int = Field(default=8, ge=1)  # best partners per shot that candidates grow from
    keep_all: bool = False
    # Annotation (Gemini). The API key is never part of the config: it comes from the environment.
    gemini_model: str = "gemini-2.5-flash"
    gemini_input: Literal["frames", "video"] = "frames"
    gemini_rpm: float = Field(default=60.0, gt=0)
    gemini_concurrency: int = Field(default=4, ge=1)
    gemini_timeout: float = Field(default=120.0, gt=0)
    gemini_max_retries: int = Field(default=5, ge=0)
    gemini_backoff: float = Field(default=2.0, ge=0)
    gemini_base_url: str | None = None
    gemini_max_reasks: int = Field(default=2, ge=0)
    gemini_temperature: float = Field(default=0.2, ge=0, le=2)
    gemini_frames_per_shot: int = Field(default=4, ge=1)  # JPEG frames per shot (--gemini-input frames)
    embed_frames_per_shot: int = Field(default=8, ge=1)  # frames the colour/CLIP embedders average (ViCLIP: its own)
    gemini_price: tuple[float, float] | None = None  # USD per million (prompt, output) tokens
    max_requests: int | None = Field(default=None, ge=0)
    caption_shots: bool = False

    @model_validator(mode="after")
    def _check(self) -> CurationConfig:
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {self.output} exists and is not a directory")
        checkpoint = {"viclip": self.viclip_checkpoint, "clip": self.clip_checkpoint}.get(self.embedder)
        if self.embedder != "color" and checkpoint is None:
            raise ValueError(
                f"--embedder {self.embedder} needs --{self.embedder}-checkpoint PATH (a local file or folder)"
            )
        if checkpoint is not None and not checkpoint.exists():
            raise ValueError(f"--{self.embedder}-checkpoint {checkpoint} does not exist")
        return self

    def embedder_config(self):
        from curation.embed import EmbedderConfig

        checkpoint = {"viclip": self.viclip_checkpoint, "clip": self.clip_checkpoint}.get(self.embedder)
        return EmbedderConfig(kind=self.embedder, checkpoint=str(checkpoint) if checkpoint else None,
                              batch_size=self.embed_batch, frames_per_shot=self.embed_frames_per_shot)  # fmt: skip

    def gemini_settings(self):
        from curation.gemini import GeminiSettings

        return GeminiSettings(model=self.gemini_model, base_url=self.gemini_base_url, timeout_s=self.gemini_timeout,
                              max_retries=self.gemini_max_retries, backoff_s=self.gemini_backoff, rpm=self.gemini_rpm,
                              concurrency=self.gemini_concurrency, max_requests=self.max_requests,
                              max_reasks=self.gemini_max_reasks, price=self.gemini_price,
                              temperature=self.gemini_temperature)  # fmt: skip

    def media_settings(self):
        from curation.annotate import MediaSettings

        return MediaSettings(mode=self.gemini_input, frames_per_shot=self.gemini_frames_per_shot)

    def miner_config(self):
        from curation.combinations import MinerConfig

        return MinerConfig(scenes=self.scenes, within=self.within, min_shot_frames=self.min_shot_frames,
                           min_relevance=self.min_relevance, duplicate_threshold=self.duplicate_threshold,
                           max_uses=self.max_uses, neighbors=self.neighbors, keep_all=self.keep_all)  # fmt: skip
