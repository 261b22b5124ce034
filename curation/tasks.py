"""What moves between the curation stages, in one typed data model: a video's task, its clip
windows and the clip results of the detection pass. Stage modules import these from here, never
from each other (a stage's own items, the work it hands its remote part, stay in its module).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from curation.shot_frames import ClipFrames
from curation.stage import Failure
from manifests.probe import VideoProbe, path_id
from manifests.schema import Status


@dataclass(frozen=True)
class ClipWindow:
    clip_index: int
    start_frame: int  # owned, inclusive
    end_frame: int  # owned, exclusive
    decode_start: int
    decode_end: int

    @classmethod
    def around(cls, clip_index: int, start: int, end: int, overlap: int, num_frames: int) -> ClipWindow:
        """The window owning [start, end), decoded with `overlap` frames of context on each side
        (within the video)."""
        return cls(clip_index, start, end, max(0, start - overlap), min(num_frames, end + overlap))

    def owns(self, frame: int) -> bool:
        """The frame is in the clip's own range (its cuts, samples and shots' starts are the clip's)."""
        return self.start_frame <= frame < self.end_frame

    def pieces(self, count: int, align: int, overlap: int, num_frames: int) -> list[ClipWindow]:
        """The clip's owned range in `count` (at most) windows of the same clip, each decoded with
        `overlap` frames of context on each side, as a clip is: a detector fed a piece reports the
        cuts a pass over the whole clip finds in it. Each piece starts a whole number of `align`
        frames (the keyframe sampling interval) after the clip, so the samples fall where they fall
        in one pass over the clip."""
        length = self.end_frame - self.start_frame
        step = -(-length // max(1, count))
        step = max(align, -(-step // align) * align)
        starts = list(range(self.start_frame, self.end_frame, step))
        ends = starts[1:] + [self.end_frame]
        return [ClipWindow.around(self.clip_index, a, b, overlap, num_frames) for a, b in zip(starts, ends)]


@dataclass
class ClipResult:
    window: ClipWindow
    cuts: list[int] = field(default_factory=list)  # first frames of new shots, owned by this clip
    forced: list[int] = field(default_factory=list)  # of those, gradual transitions' edges (never merged away)
    transitions: list[tuple[int, int]] = field(default_factory=list)  # [start, end) of dropped transitions
    thumbnails: dict[int, bytes] = field(default_factory=dict)  # frame -> JPEG, sampled in the clip
    samples: dict[str, dict] = field(default_factory=dict)  # measure name -> frame -> sample (curation.measures)
    frames: ClipFrames | None = None  # frames later stages sample, kept in this decode pass
    frames_decoded: int = 0
    seconds: float = 0.0
    error: str | None = None

    @classmethod
    def joined(cls, window: ClipWindow, parts: list[ClipResult]) -> ClipResult:
        """One clip's result from its pieces' (`ClipWindow.pieces`): what one task over the clip
        reports, its task time the pieces' sum."""
        result = cls(window)
        result.cuts = sorted({c for p in parts for c in p.cuts})
        result.forced = sorted({c for p in parts for c in p.forced})
        result.transitions = sorted({t for p in parts for t in p.transitions})
        for part in parts:
            result.thumbnails |= part.thumbnails
            for name, samples in part.samples.items():
                result.samples.setdefault(name, {}).update(samples)
        kept = [p.frames for p in parts if p.frames is not None]
        if kept:
            result.frames = ClipFrames()
            for frames in kept:
                result.frames.shots |= frames.shots
                result.frames.ends |= frames.ends
                result.frames.uncertain += frames.uncertain
        result.frames_decoded = sum(p.frames_decoded for p in parts)
        result.seconds = sum(p.seconds for p in parts)
        result.error = "; ".join(p.error for p in parts if p.error) or None
        return result


@dataclass
class VideoTask:
    """One input video on its way through the stages."""

    path: str
    probe: VideoProbe | None = None  # probe
    clips: list[ClipWindow] = field(default_factory=list)  # split: the clip windows
    detected: dict[int, ClipResult] = field(default_factory=dict)  # detect: clip index -> its result
    signals: dict[tuple[int, int], dict] = field(default_factory=dict)  # pass models: (start, end) -> columns
    shots: list[dict] = field(default_factory=list)  # reconcile: the video's shot rows
    status: Status | None = None  # set when the task ends: ok or failed
    skipped: bool = False  # ended with nothing to do (done by an earlier run, or a duplicate input)
    errors: list[Failure] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    @property
    def video_id(self) -> str:
        return self.probe.video_id if self.probe is not None else path_id(self.path)

    def drop_frames(self) -> None:
        """The task has ended: the frames its detection pass kept go (the driver holds every task
        until the run ends; what a stage handed on travels in its own items)."""
        for result in self.detected.values():
            result.frames = None
