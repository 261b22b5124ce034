"""The frames later stages need, kept during the one decode pass of shot detection.

Which frames a stage samples from a shot depends on the shot's length, known only once its end
is cut, and a cut can be confirmed a few frames late (the adaptive detector looks 2 frames ahead,
the content detector's flash filter up to min_scene_len). One rule says which frames a shot uses,
a pure function of its [start, end): `manifests.sampling.pass_frames`. The candidates lie on an absolute grid, the
frames whose number is a multiple of a power-of-two stride, the smallest stride that leaves at most
`GRID_FRAMES` (24) of them in the shot; each wanted offset takes the nearest grid frame (exactly
the wanted frames when the shot has at most 24 frames). Re-decoding a shot from its source (a
resumed run, a new embedder) reads exactly those frames, so the output never depends on whether a
run was interrupted.

While decoding, each open segment keeps the grid frames of its own span: every frame at first,
then, each time more than 24 lie before the last `late` frames (how late the detector may confirm a
cut: its own event buffer plus 2, `curation.cuts.SceneDetectCuts.late`, 4 frames for the adaptive
detector, min_scene_frames + 2 for the content detector's flash filter), only the multiples of
twice the stride; so a late cut still finds the grid of the shot it closes. A piece of a shot (a
segment cut short by a clip boundary) has a stride no larger than the shot's, so the pieces
together always hold the shot's grid. When a cut arrives late, the new segment is rebuilt from the
last `late` decoded frames (kept at stride 1), as if its frames had been pushed from the cut on.
Held decoded frames slow the decoder (its buffers are not reused while held: 24 held frames slowed
a 720p decode by about a third), so `late` is the detector's, not a generous bound. A finished shot
converts only its chosen frames; segments whose end a neighbouring clip can still change (at a
clip's start and end) convert their grid frames, and the driver picks once the video's shots are
reconciled.

A detector that confirms cuts much later (TransNetV2: up to ~250 frames, its windows) passes its
lateness as `late`; the recent frames then span that many frames, each converted to the specs'
small images when pushed (the same pixels as converting at the cut), not held at full size.

Memory per clip task: 24 decoded frames of the open segment plus the `late + 1` most
recent ones (the segment's newest candidates are among them: references, not copies), plus at most 3 x 24 converted frames per spec for the uncertain segments, plus `spec.count`
converted frames per finished shot (8 frames of 320x180 RGB: 1.4 MB per shot with the colour embedder).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from manifests.frames import to_rgb
from manifests.sampling import GRID_FRAMES, Rule, frame_offsets, grid_frames, grid_multiples, nearest, pass_frames

# Room for late cuts beyond min_scene_frames: the grid's, and a keeper's whose detector gives no `late`.
LATE_CUTS = 8
CAPACITY = GRID_FRAMES - LATE_CUTS  # the grid holds at most 24 frames of a shot (embedded shots: >= 2 s)


@dataclass(frozen=True)
class FrameSpec:
    """How a stage samples and sizes a shot's frames (upright RGB uint8)."""

    count: int = 8
    rule: Rule = "uniform"  # manifests.sampling: sample_indices | the official ViCLIP demo's
    max_side: int | None = 320  # aspect kept, swscale bilinear (as read_shot_frames)
    square: int | None = None  # full-size RGB, then OpenCV bilinear to square x square (ViCLIP's preprocessing)

    def offsets(self, num_frames: int) -> list[int]:
        return frame_offsets(self.rule, num_frames, self.count)

    def pass_frames(self, start: int, end: int) -> list[int]:
        """The frames a shot [start, end) uses for this spec, whichever path decodes them."""
        return pass_frames(start, end, self.offsets(end - start))

    def image(self, frame, rotation: int) -> np.ndarray:
        """A decoded av.VideoFrame as this spec's image."""
        if self.square:
            import cv2

            rgb = to_rgb(frame, rotation, None)
            return cv2.resize(rgb, (self.square, self.square), interpolation=cv2.INTER_LINEAR)
        return to_rgb(frame, rotation, self.max_side)

    def read_size(self) -> int | None:
        """max_side for read_shot_frames that gives the same pixels before `finish`."""
        return None if self.square else self.max_side

    def finish(self, images: np.ndarray) -> np.ndarray:
        """Frames read with read_shot_frames(max_side=read_size()) -> this spec's images."""
        if not self.square:
            return images
        import cv2

        return np.stack([cv2.resize(f, (self.square, self.square), interpolation=cv2.INTER_LINEAR) for f in images])


@dataclass
class ShotFrames:
    """A shot's sampled frames for one spec: source frame numbers and the images."""

    frames: list[int]
    images: np.ndarray


@dataclass
class Segment:
    start: int
    stride: int = 1
    candidates: list = field(default_factory=list)  # [(frame, av.VideoFrame)], ascending, on the grid

    def push(self, index: int, frame, limit: int, lag: int = 0) -> None:
        """Keep `frame` if it is on the grid. The stride grows only with the frames older than `lag`:
        a cut confirmed up to `lag` frames late still finds the grid of the shot it closes."""
        if index % self.stride:
            return
        self.candidates.append((index, frame))
        while grid_multiples(self.start, index - lag + 1, self.stride) > limit:  # keep multiples of twice the stride
            self.stride *= 2
            self.candidates = [c for c in self.candidates if c[0] % self.stride == 0]


@dataclass
class Uncertain:
    """Converted candidates of a segment a neighbouring clip may still extend: frame -> image per spec."""

    start: int
    end: int
    frames: list[int]
    images: dict[str, np.ndarray]


@dataclass
class ClipFrames:
    """What a clip task hands the driver: finished shots' frames and the uncertain segments'."""

    shots: dict[int, dict[str, ShotFrames]] = field(default_factory=dict)  # start frame -> spec -> frames
    ends: dict[int, int] = field(default_factory=dict)  # start frame -> end frame of those shots
    uncertain: list[Uncertain] = field(default_factory=list)


class FrameKeeper:
    """Keeps candidates while a clip decodes; see the module docstring for the rules."""

    def __init__(self, specs: dict[str, FrameSpec], start: int, end: int, num_frames: int, min_scene_frames: int,
                 rotation: int, capacity: int = CAPACITY, late: int | None = None):  # fmt: skip
        self.specs, self.start, self.end, self.num_frames = specs, start, end, num_frames
        self.min_scene_frames, self.rotation = min_scene_frames, rotation
        self.limit = capacity + LATE_CUTS
        self.open = Segment(start)
        self.lag = min_scene_frames + LATE_CUTS if late is None else late  # how late a cut may be confirmed
        # A detector that confirms cuts much later (TransNetV2: its windows) would hold that many
        # decoded full-size frames: each frame is converted to the specs' small images when pushed.
        self.convert_early = self.lag > min_scene_frames + LATE_CUTS
        self.recent: deque = deque(maxlen=self.lag + 1)  # (frame, av.VideoFrame or images), every frame
        self.result = ClipFrames()

    def _final(self, boundary: int) -> bool:
        """Whether the reconciled manifest certainly has a shot boundary here: the video's ends, and a
        cut that no cut of the window before can take away (the window starting the video has none)."""
        if boundary == self.start:
            return self.start == 0
        if boundary == self.end:
            return self.end >= self.num_frames
        return self.start == 0 or boundary - self.start >= self.min_scene_frames

    def push(self, index: int, frame) -> None:
        if self.start <= index < self.end:
            if self.convert_early:
                frame = {name: spec.image(frame, self.rotation) for name, spec in self.specs.items()}
            self.open.push(index, frame, self.limit, self.lag)
            self.recent.append((index, frame))

    def cut(self, cut: int) -> None:
        """A cut the detector emitted (possibly a few frames late)."""
        if not self.start < cut < self.end or cut <= self.open.start:
            return
        later = [c for c in self.open.candidates if c[0] >= cut]
        self.open.candidates = [c for c in self.open.candidates if c[0] < cut]
        self._close(self.open, cut)
        self.open = Segment(cut)
        if self.recent and self.recent[0][0] <= cut:  # the usual case: rebuilt as if pushed from the cut on
            for index, frame in self.recent:
                if index >= cut:
                    self.open.push(index, frame, self.limit, self.lag)
        else:  # later than the recent frames reach: the old segment's frames (then `pass_frames` may miss some)
            self.open.candidates = later

    def finish(self) -> ClipFrames:
        self._close(self.open, self.end)
        self.open = Segment(self.end)
        return self.result

    def _close(self, segment: Segment, end: int) -> None:
        if end <= segment.start or not segment.candidates:
            return
        available = [f for f, _ in segment.candidates]
        by_frame = dict(segment.candidates)
        if self._final(segment.start) and self._final(end):
            shot = {}
            for name, spec in self.specs.items():
                chosen = _choose(segment.start, end, spec, available, self.limit)
                cache: dict[int, np.ndarray] = {}
                images = [cache.setdefault(f, self._image(by_frame[f], name, spec)) for f in chosen]
                shot[name] = ShotFrames(chosen, np.stack(images))
            self.result.shots[segment.start] = shot
            self.result.ends[segment.start] = end
        else:
            grid = grid_frames(segment.start, end, self.limit)  # a piece holds the grid of any shot it is part of
            if set(grid) <= set(available):
                available = grid
            images = {
                name: np.stack([self._image(by_frame[f], name, spec) for f in available])
                for name, spec in self.specs.items()
            }
            self.result.uncertain.append(Uncertain(segment.start, end, available, images))

    def _image(self, kept, name: str, spec: FrameSpec) -> np.ndarray:
        return kept[name] if self.convert_early else spec.image(kept, self.rotation)


def frames_for_shot(start: int, end: int, clips: list[ClipFrames], spec_name: str, spec: FrameSpec):
    """A reconciled shot's frames for one spec, from the clip tasks' results; None if none were kept."""
    for clip in clips:
        found = clip.shots.get(start)
        if found is not None and spec_name in found:
            return found[spec_name]
    frames: dict[int, np.ndarray] = {}
    for clip in clips:
        for part in clip.uncertain:
            if part.end <= start or part.start >= end or spec_name not in part.images:
                continue
            for i, f in enumerate(part.frames):
                if start <= f < end:
                    frames[f] = part.images[spec_name][i]
    if not frames:
        return None
    chosen = _choose(start, end, spec, sorted(frames))
    return ShotFrames(chosen, np.stack([frames[f] for f in chosen]))


def _choose(start: int, end: int, spec: FrameSpec, available: list[int], limit: int = GRID_FRAMES) -> list[int]:
    """`pass_frames` when the kept frames hold the shot's grid (always, but for a cut later than the
    recent frames reach); else the nearest kept frames."""
    grid = grid_frames(start, end, limit)
    pool = grid if set(grid) <= set(available) else available
    return nearest([start + o for o in spec.offsets(end - start)], pool)
