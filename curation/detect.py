"""The detection stage: one Ray task per clip window decodes the clip once and, in that one pass,
finds its cuts (curation/cuts.py), takes the measurements the job's filters declare
(curation/measures.py), keeps keyframes and the frames later stages sample (curation/shot_frames.py),
and reports its frames to the progress board for long videos. Each shot's keyframe is taken from
the small detection image, not decoded again at full size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np

from curation.config import DetectorConfig, ShotsConfig
from curation.cuts import Boundary, ClipCutter, DetectionFrames
from curation.measures import Measure, Taking
from curation.progress import FrameBoard, reporting
from curation.shot_frames import FrameKeeper, FrameSpec
from curation.stage import Failure, Remote, Resources, Stage
from curation.tasks import ClipResult, ClipWindow, VideoTask
from manifests.frames import iter_frames, open_video, upright
from manifests.media import encode_jpeg

if TYPE_CHECKING:  # the driver's side only: a clip task does not import the driver (pandas, the tables)
    from curation.driver import Driver


def frame_index(pts: np.ndarray, frame_pts: int) -> int:
    """A decoded frame's number on the source timeline: its PTS in the probe's index (the nearest
    one if the decoder retimed the frame)."""
    index = int(np.searchsorted(pts, frame_pts))
    if index >= len(pts) or pts[index] != frame_pts:
        index = int(np.argmin(np.abs(pts - frame_pts)))
    return index


def detect_clip(
    path: str,
    window: ClipWindow,
    pts: np.ndarray,
    fps: float,
    rotation: int,
    detector_config: DetectorConfig,
    *,
    thumbnail_every: int,
    thumbnail_max_side: int,
    threads: int = 0,
    seekable: bool = True,
    frame_specs: dict[str, FrameSpec] | None = None,
    transnet=None,
    on_frames: Callable[[int], None] | None = None,
    report_every: float = 2.0,
    measures: list[Measure] = (),
) -> ClipResult:
    """Run the detector over window.decode_start..decode_end; keep cuts in the owned range.

    Frame numbers come from each decoded frame's PTS looked up in the probe's index, so they are
    source-timeline frame numbers even after a seek and for variable frame rate. With
    `frame_specs`, the same pass keeps each shot's sampled frames for later stages (shot_frames).
    `transnet` is the loaded `model.transnetv2.TransNetV2Detector` when the detector uses it;
    `on_frames(count)` is told every `report_every` seconds how many frames are decoded. Each of
    `measures` takes its samples of the owned frames (curation/measures.py) in the same pass."""
    began = time.perf_counter()
    result = ClipResult(window)
    num_frames = len(pts)
    start_pts = int(pts[window.decode_start]) if seekable and window.decode_start > 0 else None
    end_pts = int(pts[window.decode_end]) if seekable and window.decode_end < num_frames else None
    to_detector_image = DetectionFrames(detector_config.downscale_width)
    cutter: ClipCutter | None = None
    keeper: FrameKeeper | None = None
    boundaries: list[Boundary] = []
    result.samples = (taking := Taking(measures)).samples

    def record(found: list[Boundary]) -> None:
        boundaries.extend(found)
        if keeper is not None:
            for boundary in found:
                keeper.cut(boundary.frame)

    try:
        with open_video(path, threads=threads, motion_vectors=taking.motion_vectors) as (container, stream):
            frames = reporting(iter_frames(container, stream, start_pts, end_pts), on_frames, report_every)
            every = detector_config.scenedetect is not None  # PySceneDetect reads every frame's small image
            for decode_order, (frame, image) in enumerate(with_images(frames, to_detector_image, every)):
                index = frame_index(pts, frame.pts) if seekable else decode_order
                if not seekable and index >= window.decode_end:
                    break
                if cutter is None:
                    cutter = ClipCutter(detector_config, transnet, index, num_frames, fps)
                    if frame_specs:
                        keeper = FrameKeeper(frame_specs, window.start_frame, window.end_frame, num_frames,
                                             detector_config.min_scene_frames, rotation, late=cutter.late)  # fmt: skip
                mine = window.owns(index)
                thumbnail = mine and (index - window.start_frame) % thumbnail_every == 0
                image = to_detector_image(frame) if image is None and thumbnail else image  # TransNetV2 alone
                taking.frame(index, frame, image, mine, thumbnail)
                if keeper is not None:
                    keeper.push(index, frame)
                record(cutter.feed(index, frame, image))
                result.frames_decoded += 1
                if thumbnail:
                    result.thumbnails[index] = encode_thumbnail(image, rotation, thumbnail_max_side)
            if cutter is not None:
                record(cutter.finish(at_end=window.decode_end >= num_frames))
                result.transitions = sorted({t for t in cutter.transitions if window.owns(t[0])})
            if keeper is not None:
                for cut in sorted({b.frame for b in boundaries}):
                    keeper.cut(cut)  # cuts confirmed at the end; the rest were seen already
                result.frames = keeper.finish()
    except av.error.FFmpegError as err:
        result.error = f"{path}: decoding failed in frames {window.decode_start}-{window.decode_end} ({err}); the file is truncated or corrupt"
    owned = [b for b in boundaries if window.owns(b.frame) and b.frame > 0]
    result.cuts, result.forced = sorted({b.frame for b in owned}), sorted({b.frame for b in owned if b.forced})
    result.seconds = time.perf_counter() - began
    return result


IMAGE_RUN = 4  # frames whose detection images are made in one swscale call (curation.cuts.DetectionFrames.many)


def with_images(frames, to_image: DetectionFrames, every: bool, run: int = IMAGE_RUN):
    """(frame, its detection image) in decode order; the images made `run` frames at a time when every
    frame needs one (`every`), else None (the caller makes the few it needs)."""
    if not every:
        for frame in frames:
            yield frame, None
        return
    pending: list = []
    for frame in frames:
        pending.append(frame)
        if len(pending) == run:
            yield from zip(pending, to_image.many(pending))
            pending = []
    yield from zip(pending, to_image.many(pending))


@dataclass(frozen=True)
class DetectItem:
    path: str
    window: ClipWindow
    pts: object  # the probe's PTS index (an ObjectRef, shared by the video's clips, or an array)
    fps: float
    rotation: int
    seekable: bool
    threads: int = 1  # FFmpeg decoding threads
    board: object = None  # a FrameBoard actor to report decoded frames to (long videos), or None
    report_every: float = 2.0  # seconds between those reports


def clip_key(path: str, window: ClipWindow) -> str:
    """How a clip task's decoded frames are keyed on the progress board (a clip's pieces apart)."""
    return f"{path}#{window.clip_index}@{window.start_frame}"


def sample_every(keyframe_interval_seconds: float, fps: float) -> int:
    """Frames between a clip's keyframe samples (counted from the clip's first frame)."""
    return max(1, round(keyframe_interval_seconds * fps))


class DetectRemote(Remote):
    """Shot detection in one clip window per Ray task; the same decode pass keeps keyframes and the
    frames later stages sample (`frame_specs`). With TransNetV2, each worker process loads the
    network once (`setup`), on its GPU when the task reserves one."""

    name = "detect"

    def __init__(self, config: ShotsConfig, frame_specs: dict[str, FrameSpec] | None = None, gpus: float = 0.0,
                 measures: list[Measure] = ()):  # fmt: skip
        self.measures = list(measures)
        self.resources = Resources(cpus=config.cpus_per_task, gpus=gpus)
        self.detector = config.detector
        self.keyframe_interval_seconds, self.keyframe_max_side = (
            config.keyframe_interval_seconds,
            config.keyframe_max_side,
        )
        self.frame_specs = frame_specs
        self.transnet = None  # loaded in the worker, never pickled

    def setup(self) -> None:
        if self.detector.transnet:
            import torch

            from model.transnetv2 import TransNetV2Detector

            cuda = self.resources.gpus > 0 and torch.cuda.is_available()
            batch = self.detector.transnet_batch or (16 if cuda else 1)
            self.transnet = TransNetV2Detector.load("cuda" if cuda else "cpu", self.detector.transnet_weights, batch)

    def __getstate__(self):
        return self.__dict__ | {"transnet": None}

    def process(self, item: DetectItem) -> ClipResult:
        pts = item.pts
        if not isinstance(pts, np.ndarray):
            import ray

            pts = ray.get(pts)
        if self.detector.transnet and self.transnet is None:
            self.setup()
        if self.transnet is not None and self.transnet.device.type == "cpu":
            import torch

            # TransNetV2 takes this task's share of the cores (cores // clips in flight, at most 4: the
            # decode threads' count): Ray sets one thread per task, which left a lone clip's other
            # cores idle, and more threads than cores only contend with the other clip tasks.
            torch.set_num_threads(max(1, item.threads))
        key = clip_key(item.path, item.window)
        on_frames = (lambda count: item.board.report.remote(key, count)) if item.board is not None else None
        return detect_clip(item.path, item.window, pts, item.fps, item.rotation, self.detector,
                           thumbnail_every=sample_every(self.keyframe_interval_seconds, item.fps),
                           thumbnail_max_side=self.keyframe_max_side, threads=item.threads, seekable=item.seekable,
                           frame_specs=self.frame_specs, transnet=self.transnet, on_frames=on_frames,
                           report_every=item.report_every, measures=self.measures)  # fmt: skip


class Detect(Stage):
    """Each clip window of a video in its own task, or, where the video's clips would leave cores
    idle, each piece of a clip (`plan`); the video moves on when all are back. Each task's result is
    offered to the later stages as it arrives (the pass models start on its shots)."""

    name = "detect"
    about = ("PySceneDetect cuts per clip window; the same decode pass keeps keyframes and each shot's "
             "embedding frames (Ray task per clip)")  # fmt: skip

    LONG_VIDEO_SECONDS = 120.0  # from this length on, clip tasks report frames as they decode ...
    LONG_VIDEO_SECONDS_TRANSNET = 10.0  # ... or this one with TransNetV2 (~60 frames/s on a CPU core)
    REPORT_EVERY_SECONDS = 2.0  # ... this often

    def __init__(self, remote: DetectRemote, config: ShotsConfig):
        self.remote, self.config = remote, config
        self.pts: dict[str, object] = {}  # video id -> its PTS index in Ray's object store
        self.cpus = 1
        self.board = None  # the FrameBoard actor, started with the first long video
        self.reading = None  # its answer on the way
        self.frames_total = self.frames_finished = 0  # decode ranges of the clips sent, and of those back
        self.finished: set[str] = set()  # clip keys whose result is back
        self.in_flight = 0  # clip tasks sent and not back

    def start(self, driver: Driver) -> None:
        import ray

        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Workers start while the first videos are probed (each start costs a second or two).
        driver.executor.prestart(self.remote.name, min(self.cpus, 2 * driver.summary.videos_total))

    def enter(self, task: VideoTask, driver: Driver) -> None:
        import ray

        driver.announce(self, task)  # a video is coming: later stages may set up now
        probe = task.probe
        self.pts[probe.video_id] = ray.put(probe.pts)
        plan = self.plan(task)
        tasks = sum(len(pieces) for pieces in plan.values())
        threads = self.config.decode_threads or max(1, min(4, self.cpus // tasks))
        long = self.LONG_VIDEO_SECONDS_TRANSNET if self.config.detector.transnet else self.LONG_VIDEO_SECONDS
        board = self.frame_board(driver) if probe.duration_s >= long else None
        for clip in task.clips:
            parts: dict[int, ClipResult] = {}
            for window in plan[clip.clip_index]:
                item = DetectItem(probe.source_path, window, self.pts[probe.video_id], probe.fps, probe.rotation,
                                  probe.pts_reliable, threads, board, self.REPORT_EVERY_SECONDS)  # fmt: skip
                self.frames_total += window.decode_end - window.decode_start
                self.in_flight += 1
                driver.work(self, item, self._on_piece(task, clip, window, parts, len(plan[clip.clip_index]), driver))

    def plan(self, task: VideoTask) -> dict[int, list[ClipWindow]]:
        """Each clip's task windows: the clip itself or, where the video's clips would leave cores idle
        (a short video, a big machine), pieces of at least --piece-min-seconds, which report what one
        task over the clip reports (`ClipWindow.pieces`, `ClipResult.joined`): one clip task's
        per-frame work (detector, measures, kept frames) runs on one core whatever its decode threads."""
        probe, clips = task.probe, task.clips
        idle = int(self.cpus // self.config.cpus_per_task) - self.in_flight  # clip tasks that could run now
        shortest = self.config.piece_min_seconds * probe.fps
        if not probe.pts_reliable or shortest <= 0 or idle <= len(clips):
            return {clip.clip_index: [clip] for clip in clips}
        align = sample_every(self.config.keyframe_interval_seconds, probe.fps)
        overlap = self.config.overlap_frames(probe.fps)
        plan = {}
        for clip in clips:
            count = min(idle // len(clips), int((clip.end_frame - clip.start_frame) // shortest))
            plan[clip.clip_index] = clip.pieces(count, align, overlap, probe.num_frames) if count > 1 else [clip]
        return plan

    def frame_board(self, driver: Driver):
        """The actor clip tasks report decoded frames to; the driver reads it while it waits."""
        if self.board is None:
            import ray

            self.board = ray.remote(FrameBoard).options(num_cpus=0).remote()
            driver.executor.while_waiting.append(lambda: self.show_frames(driver))
        return self.board

    def show_frames(self, driver: Driver) -> None:
        """Updates the progress line from the board's last answer; never waits for it (one read in flight)."""
        import ray

        if self.reading is not None:
            if not ray.wait([self.reading], timeout=0)[0]:
                return
            try:
                in_flight = ray.get(self.reading)
            except ray.exceptions.RayError:  # progress is a nicety: a lost board never stops the job
                in_flight = {}
            done = self.frames_finished + sum(n for key, n in in_flight.items() if key not in self.finished)
            driver.progress.frames(done, self.frames_total)
        self.reading = self.board.read.remote()

    def _on_piece(self, task: VideoTask, clip: ClipWindow, window: ClipWindow, parts: dict[int, ClipResult],
                  count: int, driver: Driver):  # fmt: skip
        """A task's result: offered on as it is; the clip's result once its `count` pieces are back."""

        def done(result) -> None:
            self.in_flight -= 1
            if isinstance(result, Failure):
                result = ClipResult(window, error=f"{task.probe.source_path}: {result.error}")
            self.finished.add(clip_key(task.probe.source_path, window))
            self.frames_finished += window.decode_end - window.decode_start
            driver.summary.frames_decoded += result.frames_decoded
            driver.summary.detect_task_seconds += result.seconds
            if result.frames is not None and not result.error:
                driver.partial(self, task, result)
            parts[window.start_frame] = result
            if len(parts) < count:
                return
            task.detected[clip.clip_index] = result if count == 1 else ClipResult.joined(
                clip, [parts[start] for start in sorted(parts)])  # fmt: skip
            if len(task.detected) == len(task.clips):
                del self.pts[task.probe.video_id]
                driver.forward(self, task)

        return done


def detect_gpus(config: ShotsConfig) -> float:
    """GPUs per clip task: TransNetV2 runs there when the cluster has GPUs (a quarter each by default)."""
    import ray

    if config.gpus_per_task is not None:
        return config.gpus_per_task
    return 0.25 if config.detector.transnet and ray.cluster_resources().get("GPU", 0) else 0.0


def encode_thumbnail(image: np.ndarray, rotation: int, max_side: int) -> bytes:
    """JPEG of a (small, BGR) detection image, upright, no larger than max_side."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(2, round(image.shape[1] * scale)), max(2, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return encode_jpeg(upright(image, rotation), bgr=True)
