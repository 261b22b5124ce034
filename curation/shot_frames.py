"""The frames later stages need, kept during the one decode pass of shot detection.

Which frames a stage samples from a shot depends on the shot's length, known only once its end
is cut, and a cut can be confirmed a few frames late (the adaptive detector looks 2 frames ahead,
the content detector's flash filter up to min_scene_len). So while decoding, each open segment
(the frames since the last cut) keeps *candidates*: references to decoded frames, at stride 1
until it holds `capacity` of them (plus room for a late cut), then thinning to every other one
and doubling the stride.
When a cut arrives, candidates at or after it move to the new segment. When a segment closes
and is certainly a shot of the final manifest, each `FrameSpec` picks its frames among the
candidates (the nearest candidate to each wanted offset: the exact offsets whenever the shot has
at most `capacity` frames) and only those are converted. Segments whose end a neighbouring clip
can still change (at a clip's start and end) convert all their candidates, and the driver picks
once the video's shots are reconciled.

Memory per clip task: `capacity + 8` (24) decoded frames of the open segment, plus at most
`3 * (capacity + 8)` converted frames per spec for the uncertain segments, plus `spec.count` converted
frames per finished shot (8 frames of 320x180 RGB: 1.4 MB per shot with the colour embedder).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from manifests.frames import sample_indices, to_rgb

CAPACITY = 16  # a segment of at most this many frames gets exactly its wanted frames (embedded shots: >= 2 s)
LATE_CUTS = 8  # room for frames pushed before a late cut arrives (the adaptive detector: 2 frames)


@dataclass(frozen=True)
class FrameSpec:
    """How a stage samples and sizes a shot's frames (upright RGB uint8)."""

    count: int = 8
    rule: Literal["uniform", "viclip"] = "uniform"  # sample_indices | the official ViCLIP demo's
    max_side: int | None = 320  # aspect kept, swscale bilinear (as read_shot_frames)
    square: int | None = None  # full-size RGB, then OpenCV bilinear to square x square (ViCLIP's preprocessing)

    def offsets(self, num_frames: int) -> list[int]:
        if self.rule == "viclip":
            from model.viclip import viclip_frame_indices

            return viclip_frame_indices(num_frames, self.count)
        return sample_indices(num_frames, self.count)

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


def nearest(wanted: list[int], available: list[int]) -> list[int]:
    """For each wanted frame the nearest available one (the earlier on a tie); `available` sorted."""
    if not available:
        return []
    positions = np.searchsorted(available, wanted)
    chosen = []
    for frame, pos in zip(wanted, positions):
        options = [available[i] for i in (pos - 1, pos) if 0 <= i < len(available)]
        chosen.append(min(options, key=lambda f: (abs(f - frame), f)))
    return chosen


@dataclass
class ShotFrames:
    """A shot's sampled frames for one spec: source frame numbers and the images."""

    frames: list[int]
    images: np.ndarray


@dataclass
class Segment:
    start: int
    stride: int = 1
    candidates: list = field(default_factory=list)  # [(frame, av.VideoFrame)], ascending

    def push(self, index: int, frame, capacity: int) -> None:
        if self.candidates and index - self.candidates[-1][0] < self.stride:
            return
        self.candidates.append((index, frame))
        if len(self.candidates) > capacity + LATE_CUTS:
            self.candidates = self.candidates[::2]
            self.stride *= 2


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

    def __init__(self, specs: dict[str, FrameSpec], start: int, end: int, num_frames: int, clip_index: int,
                 min_scene_frames: int, rotation: int, capacity: int = CAPACITY):  # fmt: skip
        self.specs, self.start, self.end, self.num_frames = specs, start, end, num_frames
        self.clip_index, self.min_scene_frames, self.rotation = clip_index, min_scene_frames, rotation
        self.capacity = capacity
        self.open = Segment(start)
        self.result = ClipFrames()

    def _final(self, boundary: int) -> bool:
        """Whether the reconciled manifest certainly has a shot boundary here."""
        if boundary == self.start:
            return self.clip_index == 0
        if boundary == self.end:
            return self.end >= self.num_frames
        return self.clip_index == 0 or boundary - self.start >= self.min_scene_frames

    def push(self, index: int, frame) -> None:
        if self.start <= index < self.end:
            self.open.push(index, frame, self.capacity)

    def cut(self, cut: int) -> None:
        """A cut the detector emitted (possibly a few frames late)."""
        if not self.start < cut < self.end or cut <= self.open.start:
            return
        later = [c for c in self.open.candidates if c[0] >= cut]
        self.open.candidates = [c for c in self.open.candidates if c[0] < cut]
        self._close(self.open, cut)
        self.open = Segment(cut, candidates=later)

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
                chosen = nearest([segment.start + o for o in spec.offsets(end - segment.start)], available)
                cache: dict[int, np.ndarray] = {}
                images = [cache.setdefault(f, spec.image(by_frame[f], self.rotation)) for f in chosen]
                shot[name] = ShotFrames(chosen, np.stack(images))
            self.result.shots[segment.start] = shot
            self.result.ends[segment.start] = end
        else:
            images = {
                name: np.stack([spec.image(by_frame[f], self.rotation) for f in available])
                for name, spec in self.specs.items()
            }
            self.result.uncertain.append(Uncertain(segment.start, end, available, images))


def frames_for_shot(start: int, end: int, clips: list[ClipFrames], spec_name: str, spec: FrameSpec):
    """A reconciled shot's frames for one spec, from the clip tasks' results; None if none were kept."""
    for clip in clips:
        found = clip.shots.get(start)
        if found is not None and spec_name in found:
            return found[spec_name]
    frames: dict[int, np.ndarray] = {}
    for clip in clips:
        for part in clip.uncertain:
            if part.end <= start or part.start >= end:
                continue
            for i, f in enumerate(part.frames):
                if start <= f < end:
                    frames[f] = part.images[spec_name][i]
    if not frames:
        return None
    available = sorted(frames)
    chosen = nearest([start + o for o in spec.offsets(end - start)], available)
    return ShotFrames(chosen, np.stack([frames[f] for f in chosen]))
