"""Shot detection in one clip window with PySceneDetect's detectors, and shots from cut lists.

Speed comes from the decode path, not from changing the detector: frames are decoded with
FFmpeg frame threading, downsized while still YUV (area filter) to the ~256-pixel-wide image
PySceneDetect analyses, and only then converted to BGR (its CLI converts every full-size frame
to BGR first, then resizes). Scaling in YUV keeps neutral greys exactly neutral: a single-pass
scale+convert in swscale adds a faint colour cast, which turns the hue of near-black fade frames
into noise and fires false cuts. The detector classes are PySceneDetect's own, so the cuts match
its CLI's.
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
from curation.config import DetectorConfig
from manifests.frames import iter_frames, open_video, upright


def make_detector(config: DetectorConfig):
    if config.kind == "adaptive":
        return AdaptiveDetector(adaptive_threshold=config.effective_threshold, min_scene_len=config.min_scene_frames)
    return ContentDetector(threshold=config.effective_threshold, min_scene_len=config.min_scene_frames)


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
        self._scale, self._convert = VideoReformatter(), VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if self.size is None:
            self.size = detection_size(frame.width, frame.height, self.target_width)
        if self.size == (frame.width, frame.height):
            return self._convert.reformat(frame, format="bgr24").to_ndarray()
        small = self._scale.reformat(
            frame, width=self.size[0], height=self.size[1], format="yuv420p", interpolation="AREA"
        )
        return self._convert.reformat(small, format="bgr24").to_ndarray()


@dataclass
class ClipResult:
    window: ClipWindow
    cuts: list[int] = field(default_factory=list)  # first frames of new shots, owned by this clip
    thumbnails: dict[int, bytes] = field(default_factory=dict)  # frame -> JPEG, sampled in the clip
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
) -> ClipResult:
    """Run the detector over window.decode_start..decode_end; keep cuts in the owned range.

    Frame numbers come from each decoded frame's PTS looked up in the probe's index, so they are
    source-timeline frame numbers even after a seek and for variable frame rate.
    """
    began = time.perf_counter()
    result = ClipResult(window)
    detector = make_detector(detector_config)
    num_frames = len(pts)
    start_pts = int(pts[window.decode_start]) if seekable and window.decode_start > 0 else None
    end_pts = int(pts[window.decode_end]) if seekable and window.decode_end < num_frames else None
    to_detector_image = DetectionFrames(detector_config.downscale_width)
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
                for cut in detector.process_frame(timecode, to_detector_image(frame)):
                    result.cuts.append(cut.frame_num)
                result.frames_decoded += 1
                if (
                    window.start_frame <= index < window.end_frame
                    and (index - window.start_frame) % thumbnail_every == 0
                ):
                    result.thumbnails[index] = encode_thumbnail(frame, rotation, thumbnail_max_side)
            if timecode is not None and window.decode_end >= num_frames:
                result.cuts += [cut.frame_num for cut in detector.post_process(timecode)]
    except av.error.FFmpegError as err:
        result.error = f"{path}: decoding failed in frames {window.decode_start}-{window.decode_end} ({err}); the file is truncated or corrupt"
    result.cuts = sorted({c for c in result.cuts if window.start_frame <= c < window.end_frame and c > 0})
    result.seconds = time.perf_counter() - began
    return result


def encode_thumbnail(frame: av.VideoFrame, rotation: int, max_side: int) -> bytes:
    scale = min(1.0, max_side / max(frame.width, frame.height))
    width, height = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
    image = upright(frame.to_ndarray(width=width, height=height, format="bgr24"), rotation)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("JPEG encoding of a keyframe failed")
    return jpeg.tobytes()


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
