"""Measurements taken in the one decode pass of shot detection, and summarised per shot.

A `Measure` declares what it needs from the pass and which `shots` columns it fills:
- `take(index, frame, image)` runs in the clip task, on every decoded frame (`every_frame`) or on
  the keyframe samples only (every --keyframe-interval-seconds), and returns a small picklable
  sample (or None). `frame` is the decoded `av.VideoFrame` at source resolution, `image` the
  small BGR detection image when the pass made one for this frame (always at the samples);
- `summarise(samples, shot)` runs on the driver once the shot's span is known: the samples of
  frames [start, end) in frame order -> `{column: value}` (and values later measures or filters
  read, under names that are not columns).

A filter (curation/shot_filters.py) declares the measures it judges by (`@needs(Motion)`), and the
decode pass takes exactly the measures the job's filters declare (`declared`). So a new signal is
one module with its measure and its filter, one entry in `SHOT_FILTERS` (curation/run.py), and,
to keep its summary as columns, those columns in manifests/schema.py.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class ShotSpan:
    """What a summary knows of the shot besides its samples."""

    start: int
    end: int
    width: int  # the upright picture at source resolution
    height: int
    rotation: int  # degrees counter-clockwise the stored frames are turned to display upright
    columns: dict = field(default_factory=dict)  # summaries of the measures before this one


class Measure(ABC):
    """One measurement of the decode pass (see the module's docstring). A fresh instance per clip
    task (`fresh`): a measure may keep state between frames (the previous frame, say)."""

    name: ClassVar[str] = "measure"
    columns: ClassVar[tuple[str, ...]] = ()
    every_frame: ClassVar[bool] = False
    needs_motion_vectors: ClassVar[bool] = False  # the decoder must export them (flags2=+export_mvs)

    @classmethod
    def for_config(cls, config) -> Measure:
        """The measure as the job's config sets it up (thresholds it measures against, ...)."""
        return cls()

    def fresh(self) -> Measure:
        """This clip task's own copy (the job's instances are templates, never fed a frame)."""
        return copy.copy(self)

    def take(self, index: int, frame, image) -> Any:
        """This frame's sample, or None (the default: a measure that summarises nothing per frame)."""
        return None

    @abstractmethod
    def summarise(self, samples: list, shot: ShotSpan) -> dict:
        """The shot's samples (frames [start, end), in frame order) -> {column or value name: value}."""


class Taking:
    """The measures of one clip task at work: fresh instances, and their samples of the owned frames."""

    def __init__(self, measures: list[Measure]):
        fresh = [m.fresh() for m in measures]
        self.every = [m for m in fresh if m.every_frame]
        self.at_samples = [m for m in fresh if not m.every_frame]
        self.samples: dict[str, dict] = {m.name: {} for m in fresh}
        self.motion_vectors = any(m.needs_motion_vectors for m in fresh)  # the decoder must export them

    def frame(self, index: int, frame, image, owned: bool, sample: bool) -> None:
        """A decoded frame: every-frame measures see it (their state carries over context frames) and
        keep samples of owned frames; at a keyframe sample (`sample`) the others take theirs."""
        for measure in self.every:
            value = measure.take(index, frame, image)
            if owned and value is not None:
                self.samples[measure.name][index] = value
        if sample:
            for measure in self.at_samples:
                self.samples[measure.name][index] = measure.take(index, frame, image)


class Samples:
    """One measure's samples (frame -> sample) of a video or clip, sorted once and sliced per shot
    (a long video has thousands of samples and of shots)."""

    def __init__(self, samples: dict[int, Any]):
        self.frames = sorted(samples)
        self.values = [samples[frame] for frame in self.frames]

    def between(self, start: int, end: int) -> list:
        """The samples of frames [start, end), in frame order."""
        return self.values[bisect_left(self.frames, start) : bisect_left(self.frames, end)]


def merged(results, names) -> dict[str, Samples]:
    """Each measure's samples over several clip results (`ClipResult.samples`), ready to slice."""
    return {name: Samples({f: v for r in results for f, v in r.samples.get(name, {}).items()}) for name in names}


def summarise(measures: list[Measure], samples: dict[str, Samples], span: ShotSpan) -> dict:
    """Every measure's summary of the shot, in list order (a later measure may read an earlier one's)."""
    values: dict = {}
    for measure in measures:
        found = samples.get(measure.name)
        values |= measure.summarise(found.between(span.start, span.end) if found else [],
                                    ShotSpan(span.start, span.end, span.width, span.height, span.rotation, values))  # fmt: skip
    return values


def declared(filters, config) -> list[Measure]:
    """The measures the filters declare (a filter's `needs`: Measure classes), each once, in the
    order first declared: the decode pass takes exactly what the job's filters judge by."""
    measures: dict[str, Measure] = {}
    for rule in filters:
        for kind in getattr(rule, "needs", ()):
            if kind.name not in measures:
                measures[kind.name] = kind.for_config(config)
    return list(measures.values())


def needs(*kinds: type[Measure]):
    """Declares the measures a filter judges by: `@needs(Motion)` above `def static(shot, config)`."""

    def declare(rule):
        rule.needs = kinds
        return rule

    return declare


def columns_of(measures: list[Measure]) -> tuple[str, ...]:
    return tuple(c for m in measures for c in m.columns)
