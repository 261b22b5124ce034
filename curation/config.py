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

    @model_validator(mode="after")
    def _check(self) -> CurationConfig:
        if self.output.exists() and not self.output.is_dir():
            raise ValueError(f"--output {self.output} exists and is not a directory")
        return self
