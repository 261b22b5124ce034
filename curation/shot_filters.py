"""Shot filters: each may flag a shot `filtered`, with its reason. A filtered shot stays in
shots.parquet (so the video's spans still tile it) but is never embedded, combined or captioned.

A filter is a function of the shot's evidence and the config that returns a reason or None;
`FILTERS` is the list every caller applies in order, and the first reason wins. Adding one (motion,
burnt-in text, ...) is a function here and an entry in `FILTERS`, plus, if it needs a measurement
from the decode pass, a field of `ShotEvidence` filled by `curation.detect.detect_clip`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from curation.config import CurationConfig


@dataclass(frozen=True)
class ShotEvidence:
    start: int  # [start, end) frames on the source timeline
    end: int
    seconds: float
    transition: bool  # a gradual transition's own frames (--transition-frames drop)
    luma: list[float] = field(default_factory=list)  # mean luma of frames sampled in the shot while detecting


def gradual_transition(shot: ShotEvidence, config: CurationConfig) -> str | None:
    if shot.transition:
        return f"a gradual transition's {shot.end - shot.start} frames (--transition-frames drop)"
    return None


def too_short(shot: ShotEvidence, config: CurationConfig) -> str | None:
    if shot.seconds < config.shots.min_shot_seconds:
        return f"shorter than --min-shot-seconds {config.shots.min_shot_seconds:g}"
    return None


def too_dark(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """Mostly black shots (fades held, night footage without detail) teach a generator little."""
    threshold = config.shots.min_mean_luma
    if threshold <= 0 or not shot.luma:
        return None
    mean = float(np.mean(shot.luma))
    if mean < threshold:
        return f"darker than --min-mean-luma {threshold:g} (mean luma {mean:.1f} of 255)"
    return None


FILTERS: list[Callable[[ShotEvidence, CurationConfig], str | None]] = [gradual_transition, too_short, too_dark]


def filter_reason(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The first filter's reason to flag the shot, or None: the shot is ok."""
    return next((reason for rule in FILTERS if (reason := rule(shot, config))), None)


def evidence(probe, start: int, end: int, transitions: set, luma: dict[int, float]) -> ShotEvidence:
    """What the filters judge the shot [start, end) of a `manifests.probe.VideoProbe` by."""
    seconds = probe.frame_seconds(end) - probe.frame_seconds(start)
    return ShotEvidence(start, end, seconds, (start, end) in transitions, samples_in(luma, start, end))


def mean_luma(bgr: np.ndarray) -> float:
    """Mean BT.601 luma (0-255) of a BGR uint8 image (the detection pass's small frame)."""
    weights = np.array([0.114, 0.587, 0.299], dtype=np.float32)
    return float(bgr.reshape(-1, 3).astype(np.float32).mean(axis=0) @ weights)


def samples_in(luma: dict[int, float], start: int, end: int) -> list[float]:
    return [value for frame, value in sorted(luma.items()) if start <= frame < end]
