"""Split a long video into clips: logical frame windows that Ray workers seek into.

Why windows and not cut files: cutting with stream copy can only cut on keyframes, so clip
starts would drift from the requested boundaries and every clip would be a second copy of the
data on disk. A window is just a frame range on the source timeline; a worker seeks to the
keyframe before it (using the PTS index from the probe) and decodes forward. Shot spans are
therefore on the source timeline by construction.

Boundary reconciliation: each clip *owns* the half-open frame range [start_frame, end_frame)
and only reports cuts inside it, but decodes `overlap` frames on both sides so the detector has
the same history and look-ahead as in one continuous pass. Shots are formed afterwards from the
merged cut list of the whole video, so a shot that crosses a clip boundary stays one shot.
"""

from __future__ import annotations

import time

from curation.config import CurationConfig
from curation.driver import Driver
from curation.stage import Stage
from curation.tasks import ClipWindow, VideoTask
from manifests.probe import VideoProbe


def plan_clips(num_frames: int, fps: float, clip_minutes: float, overlap_frames: int) -> list[ClipWindow]:
    """Windows of about `clip_minutes` covering [0, num_frames) exactly once.

    A last piece shorter than a quarter clip is folded into the previous clip rather than
    becoming a tiny unit of work.
    """
    if num_frames <= 0:
        return []
    clip_frames = max(1, round(clip_minutes * 60.0 * fps))
    starts = list(range(0, num_frames, clip_frames))
    if len(starts) > 1 and num_frames - starts[-1] < clip_frames / 4:
        starts.pop()
    ends = starts[1:] + [num_frames]
    return [ClipWindow.around(i, a, b, overlap_frames, num_frames) for i, (a, b) in enumerate(zip(starts, ends))]


def clip_windows(probe: VideoProbe, config: CurationConfig) -> list[ClipWindow]:
    """Windows of --clip-minutes with overlap (one window for a video without reliable timestamps)."""
    overlap = config.shots.overlap_frames(probe.fps)
    if probe.pts_reliable:
        return plan_clips(probe.num_frames, probe.fps, config.shots.clip_minutes, overlap)
    return [ClipWindow(0, 0, probe.num_frames, 0, probe.num_frames)]


class Split(Stage):
    name = "split"
    about = "10-minute clip windows with overlap (driver)"

    def __init__(self, config: CurationConfig):
        self.config = config

    def enter(self, task: VideoTask, driver: Driver) -> None:
        task.clips, task.started = clip_windows(task.probe, self.config), time.perf_counter()
        driver.forward(self, task)
