"""Shot detection in one clip window with PySceneDetect's detectors, and shots from cut lists.

Speed comes from the decode path and the score arithmetic, never from changing the detector:
- frames are decoded with FFmpeg frame threading and, for 8-bit 4:2:0 video (nearly all video),
  shrunk while still YUV, plane by plane with the linear filter PySceneDetect uses, to the
  ~256-pixel-wide image it analyses, and only then turned into BGR (its CLI converts every
  full-size frame to BGR first, then resizes). Other pixel formats (10-bit, 4:4:4, ...) take
  PySceneDetect's own order, full-size BGR then resize, which is exact for them. Scaling planes
  separately keeps neutral greys exactly neutral: a single-pass scale+convert adds a faint colour
  cast, which turns the hue of near-black fade frames into noise and fires false cuts.
- the detectors are PySceneDetect's own classes; only their per-frame score is computed with
  cv2.absdiff + cv2.sumElems instead of int32 numpy arrays. Both sum the same integers exactly, and
  the weighted sum keeps its order, so every score (and so every cut) is bit-identical.
- each shot's keyframe is taken from the small detection image, not decoded again at full size.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from curation.config import DetectorConfig, ShotsConfig
from curation.driver import Driver, Step, VideoTask
from curation.measures import Measure, Taking
from curation.progress import FrameBoard, reporting
from curation.shot_frames import LATE_CUTS, ClipFrames, FrameKeeper, FrameSpec
from curation.split import ClipWindow
from curation.stage import Failure, Resources, Stage
from manifests.frames import iter_frames, open_video, upright
from manifests.media import encode_jpeg


class _ExactFastScore:
    """ContentDetector's frame score with the same integer sums, computed by OpenCV in one pass."""

    _last_hsv: np.ndarray | None = None

    def _calculate_frame_score(self, timecode, frame_img: np.ndarray) -> float:
        if self._weights.delta_edges > 0.0 or self.stats_manager is not None:  # the rarely used edge path
            return super()._calculate_frame_score(timecode, frame_img)
        hsv = cv2.cvtColor(frame_img, cv2.COLOR_BGR2HSV)
        last, self._last_hsv = self._last_hsv, hsv
        if last is None:
            return 0.0
        pixels = float(hsv.shape[0] * hsv.shape[1])
        hue, sat, lum, _ = cv2.sumElems(cv2.absdiff(hsv, last))
        components = (hue / pixels, sat / pixels, lum / pixels, 0.0)
        return sum(c * w for c, w in zip(components, self._weights, strict=True)) / sum(abs(w) for w in self._weights)


class FastAdaptiveDetector(_ExactFastScore, AdaptiveDetector):
    pass


class FastContentDetector(_ExactFastScore, ContentDetector):
    pass


def make_detector(config: DetectorConfig):
    """The PySceneDetect detector of the config (adaptive or content)."""
    if config.scenedetect == "adaptive":
        return FastAdaptiveDetector(
            adaptive_threshold=config.effective_threshold, min_scene_len=config.min_scene_frames
        )
    return FastContentDetector(threshold=config.effective_threshold, min_scene_len=config.min_scene_frames)


@dataclass(frozen=True)
class Boundary:
    frame: int  # the first frame of a new shot
    forced: bool = False  # a gradual transition's edge (--transition-frames drop): kept whatever its distance


class MinSceneChain:
    """PySceneDetect's minimum scene length over a stream of cuts: a cut closer than
    `min_scene_frames` to the previous boundary (or to the first frame seen) is dropped; a forced
    boundary is always kept. The same rule `shots_from_cuts` applies to the merged cut list."""

    def __init__(self, min_scene_frames: int, first: int):
        self.min_scene_frames, self.last = min_scene_frames, first

    def __call__(self, boundaries: list[Boundary]) -> list[Boundary]:
        kept = []
        for boundary in boundaries:
            if boundary.forced or boundary.frame - self.last >= self.min_scene_frames:
                kept.append(boundary)
                self.last = boundary.frame
        return kept


class SceneDetectCuts:
    """A PySceneDetect detector in the decode pass: its cuts, confirmed a few frames late."""

    def __init__(self, config: DetectorConfig, fps: float):
        self.detector, self.fps = make_detector(config), fps
        self.timecode = None
        self.late = config.min_scene_frames + LATE_CUTS  # the flash filter holds a cut up to min_scene_len
        self.settled = 0

    def feed(self, index: int, image: np.ndarray) -> list[Boundary]:
        self.timecode = FrameTimecode(index, fps=self.fps)
        self.settled = index + 1 - self.late
        return [Boundary(cut.frame_num) for cut in self.detector.process_frame(self.timecode, image)]

    def finish(self, at_end: bool) -> list[Boundary]:
        self.settled = 1 << 62
        if self.timecode is None or not at_end:
            return []
        return [Boundary(cut.frame_num) for cut in self.detector.post_process(self.timecode)]


class TransNetCuts:
    """TransNetV2 in the decode pass: 48x27 frames streamed through windows on the absolute frame
    grid (`model.transnetv2.StreamingPredictor`), so a clip's predictions equal whole-video ones.

    Each transition becomes a cut after the middle of its single-frame run; with `drop`, a gradual
    one (3 frames or more, from the all-frames head) becomes two forced boundaries around its
    frames, and the span is reported in `transitions`."""

    def __init__(self, detector, config: DetectorConfig, first: int, num_frames: int):
        from model.transnetv2 import MAX_TRANSITION_FRAMES, StreamingPredictor, TransitionTracker

        self.drop = config.transition_frames == "drop"
        self.stream = StreamingPredictor(detector, first, num_frames)
        self.tracker = TransitionTracker(config.transnet_threshold, first)
        self.expected = first  # the next frame number the stream needs
        self.last: np.ndarray | None = None
        self.transitions: list[tuple[int, int]] = []
        self.late = self.stream.lag + 2 * MAX_TRANSITION_FRAMES  # a cut comes once its transition is over

    @property
    def settled(self) -> int:
        return self.tracker.settled

    def feed(self, index: int, image: np.ndarray) -> list[Boundary]:
        found = []
        while self.expected <= index:  # a frame the decoder dropped is its predecessor again
            image_now = image if self.expected == index or self.last is None else self.last
            found += self._boundaries(self.stream.push(image_now))
            self.expected += 1
        self.last = image
        return found

    def finish(self, at_end: bool) -> list[Boundary]:
        found = self._boundaries(self.stream.finish())
        return found + self._from(self.tracker.finish(at_end))

    def _boundaries(self, predictions) -> list[Boundary]:
        found = []
        for start, probabilities in predictions:
            found += self._from(self.tracker.feed(start, probabilities if self.drop else probabilities[:, 0]))
        return found

    def _from(self, transitions) -> list[Boundary]:
        found = []
        for t in transitions:
            if self.drop and t.gradual and t.start > 0:
                self.transitions.append((t.start, t.end))
                found += [Boundary(t.start, forced=True), Boundary(t.end, forced=True)]
            else:
                found.append(Boundary(t.cut))
        return found


class EitherCuts:
    """adaptive+transnetv2: a cut where either detector fires; where both fire within
    --min-scene-frames, one cut. Which position wins was measured (benchmarks/shot_detection.py):
    PySceneDetect's, since both find hard cuts on the same frame, PySceneDetect places fades through
    black at their middle where TransNetV2 often does not, and TransNetV2 still adds the dissolves
    PySceneDetect misses. With --transition-frames drop, TransNetV2's dropped transitions win (their
    frames are cut out), and PySceneDetect's cuts inside or next to them are dropped."""

    def __init__(self, scenedetect: SceneDetectCuts, transnet: TransNetCuts, min_scene_frames: int):
        self.scenedetect, self.transnet, self.gap = scenedetect, transnet, min_scene_frames
        self.transnet_wins = transnet.drop
        self.primary: list[Boundary] = []  # the winning detector's boundaries, not passed on yet
        self.secondary: list[Boundary] = []
        self.released: list[int] = []  # the winning detector's boundaries already passed on, the recent ones
        self.late = max(scenedetect.late, transnet.late) + min_scene_frames

    @property
    def transitions(self) -> list[tuple[int, int]]:
        return self.transnet.transitions

    def feed(self, index: int, scenedetect_image: np.ndarray, transnet_image: np.ndarray) -> list[Boundary]:
        self._add(self.scenedetect.feed(index, scenedetect_image), self.transnet.feed(index, transnet_image))
        return self._release(min(self.scenedetect.settled, self.transnet.settled) - self.gap)

    def finish(self, at_end: bool) -> list[Boundary]:
        self._add(self.scenedetect.finish(at_end), self.transnet.finish(at_end))
        return self._release(1 << 62)

    def _add(self, scenedetect: list[Boundary], transnet: list[Boundary]) -> None:
        if self.transnet_wins:
            scenedetect, transnet = transnet, scenedetect
        self.primary += scenedetect
        self.secondary += transnet

    def _release(self, before: int) -> list[Boundary]:
        """Boundaries before `before`, in order: no boundary of either detector can still come
        within min_scene_frames of them."""
        spans = self.transnet.transitions

        near = self.released + [b.frame for b in self.primary]

        def covered(frame: int) -> bool:
            return any(abs(frame - b) < self.gap for b in near) or any(
                a - self.gap < frame < b + self.gap for a, b in spans
            )

        ready = [b for b in self.primary if b.frame < before]
        ready += [b for b in self.secondary if b.frame < before and not covered(b.frame)]
        self.primary = [b for b in self.primary if b.frame >= before]
        self.secondary = [b for b in self.secondary if b.frame >= before]
        self.released = [f for f in near if f >= before - 2 * self.gap and f < before]
        return sorted(ready, key=lambda b: b.frame)


class ClipCutter:
    """The configured detector(s) over one clip's frames, in decode order, with the minimum scene
    length applied: `feed` returns the boundaries confirmed so far (in order, at most `late`
    frames after their frame), `finish` the rest."""

    def __init__(self, config: DetectorConfig, transnet, first: int, num_frames: int, fps: float):
        self.scenedetect = SceneDetectCuts(config, fps) if config.scenedetect else None
        self.transnet = TransNetCuts(transnet, config, first, num_frames) if config.transnet else None
        if self.scenedetect and self.transnet:
            self.source = EitherCuts(self.scenedetect, self.transnet, config.min_scene_frames)
        else:
            self.source = self.scenedetect or self.transnet
        # PySceneDetect's detectors apply the minimum scene length themselves.
        self.chain = MinSceneChain(config.min_scene_frames, first) if self.transnet else None
        self.late = self.source.late
        self._small = VideoReformatter()

    @property
    def transitions(self) -> list[tuple[int, int]]:
        return self.transnet.transitions if self.transnet else []

    def transnet_image(self, frame: av.VideoFrame) -> np.ndarray:
        """The 48x27 RGB frame TransNetV2 reads, scaled as the package's FFmpeg path scales (bicubic)."""
        height, width = 27, 48
        return self._small.reformat(frame, width=width, height=height, format="rgb24",
                                    interpolation="BICUBIC").to_ndarray()  # fmt: skip

    def feed(self, index: int, frame: av.VideoFrame, detection_image: np.ndarray | None) -> list[Boundary]:
        if self.scenedetect and self.transnet:
            found = self.source.feed(index, detection_image, self.transnet_image(frame))
        elif self.transnet:
            found = self.transnet.feed(index, self.transnet_image(frame))
        else:
            found = self.scenedetect.feed(index, detection_image)
        return self.chain(found) if self.chain else found

    def finish(self, at_end: bool) -> list[Boundary]:
        found = self.source.finish(at_end)
        return self.chain(found) if self.chain else found


def detection_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """PySceneDetect's auto-downscale: factor width/target for frames at least `target` wide."""
    if width < target_width:
        return width, height
    factor = width / float(target_width)
    return max(1, round(width / factor)), max(1, round(height / factor))


class DetectionFrames:
    """Turns decoded frames into the small BGR images the detector reads; keeps swscale contexts."""

    def __init__(self, target_width: int):
        self.target_width = target_width
        self.size: tuple[int, int] | None = None
        self._convert = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            self.size = detection_size(frame.width, frame.height, self.target_width)
        width, height = self.size
        if self.size == (frame.width, frame.height):
            return self._convert.reformat(frame, format="bgr24").to_ndarray()
        if frame.format.name == "yuv420p" and width % 2 == 0 and height % 2 == 0:
            return self._from_planes(frame, width, height)
        # Anything else (10-bit, 4:2:2/4:4:4, full-range JPEG YUV, RGB): PySceneDetect's own path,
        # the full-size frame to BGR, then OpenCV's linear resize. Slower, and exact.
        bgr = self._convert.reformat(frame, format="bgr24").to_ndarray()
        return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)

    _to_bgr = VideoReformatter()
    _small: dict = {}  # (width, height) -> a reused small yuv420p frame and writable views of its planes

    @staticmethod
    def _from_planes(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
        """Strided views of the decoder's Y, U, V planes (no copy), each resized as PySceneDetect
        resizes (linear) straight into a reused small frame's planes, then one small I420 -> BGR
        conversion (no per-frame allocation: building a frame from an array costs more than the rest)."""
        chroma_h, chroma_w = (frame.height + 1) // 2, (frame.width + 1) // 2
        sizes = ((frame.height, frame.width), (chroma_h, chroma_w), (chroma_h, chroma_w))
        y, u, v = (
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
            for plane, (rows, cols) in zip(frame.planes, sizes)
        )
        small = DetectionFrames._small.get((width, height))
        if small is None:
            target = av.VideoFrame(width, height, "yuv420p")
            out = [
                np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
                for plane, (rows, cols) in zip(target.planes, ((height, width), (height // 2, width // 2),
                                                               (height // 2, width // 2)))
            ]  # fmt: skip
            small = DetectionFrames._small[(width, height)] = (target, out)
        target, out = small
        for source, dest in zip((y, u, v), out):
            cv2.resize(source, (dest.shape[1], dest.shape[0]), dst=dest, interpolation=cv2.INTER_LINEAR)
        # swscale's YUV->BGR, as before: OpenCV's conversion shifts the hue of near-black pixels.
        return DetectionFrames._to_bgr.reformat(target, format="bgr24").to_ndarray()


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
            for decode_order, frame in enumerate(frames):
                index = frame_index(pts, frame.pts) if seekable else decode_order
                if not seekable and index >= window.decode_end:
                    break
                if cutter is None:
                    cutter = ClipCutter(detector_config, transnet, index, num_frames, fps)
                    if frame_specs:
                        keeper = FrameKeeper(frame_specs, window.start_frame, window.end_frame, num_frames,
                                             window.clip_index, detector_config.min_scene_frames, rotation,
                                             late=cutter.late)  # fmt: skip
                mine = window.owns(index)
                thumbnail = mine and (index - window.start_frame) % thumbnail_every == 0
                image = to_detector_image(frame) if cutter.scenedetect or thumbnail else None
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
    """How a clip task's decoded frames are keyed on the progress board."""
    return f"{path}#{window.clip_index}"


class DetectStage(Stage):
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
        key = clip_key(item.path, item.window)
        on_frames = (lambda count: item.board.report.remote(key, count)) if item.board is not None else None
        return detect_clip(item.path, item.window, pts, item.fps, item.rotation, self.detector,
                           thumbnail_every=max(1, round(self.keyframe_interval_seconds * item.fps)),
                           thumbnail_max_side=self.keyframe_max_side, threads=item.threads, seekable=item.seekable,
                           frame_specs=self.frame_specs, transnet=self.transnet, on_frames=on_frames,
                           report_every=item.report_every, measures=self.measures)  # fmt: skip


class Detect(Step):
    """Each clip window of a video in its own task; the video moves on when all are back. Each clip's
    result is offered to the later steps as it arrives (embedding starts on its shots)."""

    name = "detect"
    about = ("PySceneDetect cuts per clip window; the same decode pass keeps keyframes and each shot's "
             "embedding frames (Ray task per clip)")  # fmt: skip

    LONG_VIDEO_SECONDS = 120.0  # from this length on, clip tasks report frames as they decode ...
    LONG_VIDEO_SECONDS_TRANSNET = 10.0  # ... or this one with TransNetV2 (~60 frames/s on a CPU core)
    REPORT_EVERY_SECONDS = 2.0  # ... this often

    def __init__(self, worker: DetectStage, config: ShotsConfig):
        self.worker, self.config = worker, config
        self.pts: dict[str, object] = {}  # video id -> its PTS index in Ray's object store
        self.cpus = 1
        self.board = None  # the FrameBoard actor, started with the first long video
        self.reading = None  # its answer on the way
        self.frames_total = self.frames_finished = 0  # decode ranges of the clips sent, and of those back
        self.finished: set[str] = set()  # clip keys whose result is back

    def start(self, driver: Driver) -> None:
        import ray

        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # Workers start while the first videos are probed (each start costs a second or two).
        driver.executor.prestart(self.worker.name, min(self.cpus - 1, 2 * driver.summary.videos_total))

    def enter(self, task: VideoTask, driver: Driver) -> None:
        import ray

        driver.partial(self, task, None)  # a video is coming: later steps may set up now
        probe = task.probe
        self.pts[probe.video_id] = ray.put(probe.pts)
        threads = self.config.decode_threads or max(1, min(4, self.cpus // len(task.clips)))
        long = self.LONG_VIDEO_SECONDS_TRANSNET if self.config.detector.transnet else self.LONG_VIDEO_SECONDS
        board = self.frame_board(driver) if probe.duration_s >= long else None
        for window in task.clips:
            item = DetectItem(probe.source_path, window, self.pts[probe.video_id], probe.fps, probe.rotation,
                              probe.pts_reliable, threads, board, self.REPORT_EVERY_SECONDS)  # fmt: skip
            self.frames_total += window.decode_end - window.decode_start
            driver.work(self, item, self._on_clip(task, window, driver))

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

    def _on_clip(self, task: VideoTask, window: ClipWindow, driver: Driver):
        def done(result) -> None:
            if isinstance(result, Failure):
                result = ClipResult(window, error=f"{task.probe.source_path}: {result.error}")
            task.detected[window.clip_index] = result
            self.finished.add(clip_key(task.probe.source_path, window))
            self.frames_finished += window.decode_end - window.decode_start
            driver.summary.frames_decoded += result.frames_decoded
            driver.summary.detect_task_seconds += result.seconds
            if result.frames is not None and not result.error:
                driver.partial(self, task, result)
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


def shots_from_cuts(
    cuts: list[int], num_frames: int, min_scene_frames: int, forced: set[int] | frozenset = frozenset()
) -> list[tuple[int, int]]:
    """[start, end) spans covering every frame once, from the merged cuts of all clips.

    Re-applies the detector's minimum scene length across clip boundaries, where two clips'
    detectors never saw each other's cuts (`MinSceneChain`, the rule the decode pass applies);
    `forced` cuts (a dropped transition's edges) always stay.
    """
    candidates = [Boundary(c, c in forced) for c in sorted(set(cuts) | set(forced)) if 0 < c < num_frames]
    boundaries = [0, *(b.frame for b in MinSceneChain(min_scene_frames, 0)(candidates)), num_frames]
    return [(a, b) for a, b in zip(boundaries[:-1], boundaries[1:]) if b > a]
