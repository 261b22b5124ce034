"""Shot filters: each may flag a shot `filtered`, with its reason. A filtered shot stays in
shots.parquet (so the video's spans still tile it) but is never embedded, combined or captioned.

A filter is a function of the shot's evidence (`ShotEvidence`) and the config that returns a reason
or None. The job's filters are the list `SHOT_FILTERS` in curation/run.py, beside its stages:
reconcile applies them to every shot row, embed before it embeds a shot early, in order, and the
first reason wins. The two rules every job needs live here; a new filter (motion, burnt-in text,
...) is a module of its own and an entry in that list, as curation/darkness.py is, plus, if it
needs a measurement from the decode pass, a field of `ShotEvidence` filled by `detect_clip`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

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


ShotFilter = Callable[[ShotEvidence, CurationConfig], str | None]


def filter_reason(shot: ShotEvidence, config: CurationConfig, filters: list[ShotFilter]) -> str | None:
    """The first filter's reason to flag the shot, or None: the shot is ok."""
    return next((reason for rule in filters if (reason := rule(shot, config))), None)


class LumaSamples:
    """The detection pass's luma samples (frame -> mean luma) of a video or clip, sorted once and
    sliced per shot (a long video has thousands of samples and of shots)."""

    def __init__(self, luma: dict[int, float]):
        self.frames = sorted(luma)
        self.values = [luma[frame] for frame in self.frames]

    def between(self, start: int, end: int) -> list[float]:
        """The samples of frames [start, end), in frame order."""
        return self.values[bisect_left(self.frames, start) : bisect_left(self.frames, end)]


def evidence(probe, start: int, end: int, transitions: set, luma: LumaSamples | dict[int, float]) -> ShotEvidence:
    """What the filters judge the shot [start, end) of a `manifests.probe.VideoProbe` by."""
    seconds = probe.frame_seconds(end) - probe.frame_seconds(start)
    samples = luma if isinstance(luma, LumaSamples) else LumaSamples(luma)
    return ShotEvidence(start, end, seconds, (start, end) in transitions, samples.between(start, end))


def samples_in(luma: dict[int, float], start: int, end: int) -> list[float]:
    return LumaSamples(luma).between(start, end)
