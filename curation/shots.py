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
from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from curation.clips import ClipWindow
from curation.config import DetectorConfig, ShotsConfig
from curation.shot_frames import ClipFrames, FrameKeeper, FrameSpec
from curation.stage import Resources, Stage
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
    if config.kind == "adaptive":
        return FastAdaptiveDetector(
            adaptive_threshold=config.effective_threshold, min_scene_len=config.min_scene_frames
        )
    return FastContentDetector(threshold=config.effective_threshold, min_scene_len=config.min_scene_frames)


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
    thumbnails: dict[int, bytes] = field(default_factory=dict)  # frame -> JPEG, sampled in the clip
    frames: ClipFrames | None = None  # frames later stages sample, kept in this decode pass
    frames_decoded: int = 0
    seconds: float = 0.0
    error: str | None = None


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
) -> ClipResult:
    """Run the detector over window.decode_start..decode_end; keep cuts in the owned range.

    Frame numbers come from each decoded frame's PTS looked up in the probe's index, so they are
    source-timeline frame numbers even after a seek and for variable frame rate. With
    `frame_specs`, the same pass keeps each shot's sampled frames for later stages (shot_frames).
    """
    began = time.perf_counter()
    result = ClipResult(window)
    detector = make_detector(detector_config)
    num_frames = len(pts)
    start_pts = int(pts[window.decode_start]) if seekable and window.decode_start > 0 else None
    end_pts = int(pts[window.decode_end]) if seekable and window.decode_end < num_frames else None
    to_detector_image = DetectionFrames(detector_config.downscale_width)
    keeper = (
        FrameKeeper(
            frame_specs,
            window.start_frame,
            window.end_frame,
            num_frames,
            window.clip_index,
            detector_config.min_scene_frames,
            rotation,
        )  # fmt: skip
        if frame_specs
        else None
    )
    timecode = None
    try:
        with open_video(path, threads=threads) as (container, stream):
            for decode_order, frame in enumerate(iter_frames(container, stream, start_pts, end_pts)):
                if seekable:
                    index = int(np.searchsorted(pts, frame.pts))
                    if index >= num_frames or pts[index] != frame.pts:  # decoder retimed a frame
                        index = int(np.argmin(np.abs(pts - frame.pts)))
                else:
                    index = decode_order
                    if index >= window.decode_end:
                        break
                timecode = FrameTimecode(index, fps=fps)
                image = to_detector_image(frame)
                if keeper is not None:
                    keeper.push(index, frame)
                for cut in detector.process_frame(timecode, image):
                    result.cuts.append(cut.frame_num)
                    if keeper is not None:
                        keeper.cut(cut.frame_num)
                result.frames_decoded += 1
                if (
                    window.start_frame <= index < window.end_frame
                    and (index - window.start_frame) % thumbnail_every == 0
                ):
                    result.thumbnails[index] = encode_thumbnail(image, rotation, thumbnail_max_side)
            if timecode is not None and window.decode_end >= num_frames:
                result.cuts += [cut.frame_num for cut in detector.post_process(timecode)]
            if keeper is not None:
                for cut in sorted(set(result.cuts)):
                    keeper.cut(cut)  # post-processed cuts; the rest were seen already
                result.frames = keeper.finish()
    except av.error.FFmpegError as err:
        result.error = f"{path}: decoding failed in frames {window.decode_start}-{window.decode_end} ({err}); the file is truncated or corrupt"
    result.cuts = sorted({c for c in result.cuts if window.start_frame <= c < window.end_frame and c > 0})
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


class DetectStage(Stage):
    """Shot detection in one clip window per Ray task; the same decode pass keeps keyframes and the
    frames later stages sample (`frame_specs`)."""

    name = "detect"

    def __init__(self, config: ShotsConfig, frame_specs: dict[str, FrameSpec] | None = None):
        self.resources = Resources(cpus=config.cpus_per_task)
        self.detector = config.detector
        self.keyframe_interval_seconds, self.keyframe_max_side = (
            config.keyframe_interval_seconds,
            config.keyframe_max_side,
        )
        self.frame_specs = frame_specs

    def process(self, item: DetectItem) -> ClipResult:
        pts = item.pts
        if not isinstance(pts, np.ndarray):
            import ray

            pts = ray.get(pts)
        return detect_clip(item.path, item.window, pts, item.fps, item.rotation, self.detector,
                           thumbnail_every=max(1, round(self.keyframe_interval_seconds * item.fps)),
                           thumbnail_max_side=self.keyframe_max_side, threads=item.threads, seekable=item.seekable,
                           frame_specs=self.frame_specs)  # fmt: skip


def encode_thumbnail(image: np.ndarray, rotation: int, max_side: int) -> bytes:
    """JPEG of a (small, BGR) detection image, upright, no larger than max_side."""
    scale = min(1.0, max_side / max(image.shape[:2]))
    if scale < 1.0:
        size = (max(2, round(image.shape[1] * scale)), max(2, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return encode_jpeg(upright(image, rotation), bgr=True)


def shots_from_cuts(cuts: list[int], num_frames: int, min_scene_frames: int) -> list[tuple[int, int]]:
    """[start, end) spans covering every frame once, from the merged cuts of all clips.

    Re-applies the detector's minimum scene length across clip boundaries, where two clips'
    detectors never saw each other's cuts.
    """
    boundaries = [0]
    for cut in sorted(set(cuts)):
        if 0 < cut < num_frames and cut - boundaries[-1] >= min_scene_frames:
            boundaries.append(cut)
    boundaries.append(num_frames)
    return [(a, b) for a, b in zip(boundaries[:-1], boundaries[1:]) if b > a]
