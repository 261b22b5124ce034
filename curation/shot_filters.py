"""Shot filters: each may flag a shot `filtered`, with its reason. A filtered shot stays in
shots.parquet (so the video's spans still tile it) but is never embedded, combined or captioned.

A filter is a function of the shot's evidence (`ShotEvidence`: its span, and the summaries of the
measurements the detection pass took, curation/measures.py) and the config that returns a reason or
None. The job's filters are the list `SHOT_FILTERS` in curation/run.py, beside its measures and
stages: reconcile applies them to every shot row, in order, and the first reason wins (the pass
models skip the shots of a finished clip that the filters before them flag). The two rules every job needs live here; every other filter is
a module with its measure (darkness, motion, bars, text, duplicates).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from curation.config import CurationConfig
from curation.measures import Measure, Samples, ShotSpan, summarise


@dataclass(frozen=True)
class ShotEvidence:
    start: int  # [start, end) frames on the source timeline
    end: int
    seconds: float
    transition: bool  # a gradual transition's own frames (--transition-frames drop)
    width: int = 0  # the upright picture at source resolution
    height: int = 0
    values: dict = field(default_factory=dict)  # the measures' summaries: shots columns and more


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


def evidence(
    probe,
    start: int,
    end: int,
    transitions: set,
    samples: dict[str, Samples] | None = None,
    measures: list[Measure] = (),
    extra: dict | None = None,
) -> ShotEvidence:
    """What the filters judge the shot [start, end) of a `manifests.probe.VideoProbe` by: its
    times, and each measure's summary of its samples (`extra`: values found after the pass)."""
    seconds = probe.frame_seconds(end) - probe.frame_seconds(start)
    span = ShotSpan(start, end, probe.width, probe.height, probe.rotation)
    values = summarise(list(measures), samples or {}, span) | (extra or {})
    return ShotEvidence(start, end, seconds, (start, end) in transitions, probe.width, probe.height, values)
