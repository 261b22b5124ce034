"""Cut detection in a stream of decoded frames, behind one interface: each detector `feed`s frame
by frame (`feed(index, frame, image)` for the pass's cutter) and `finish`es with the cuts it still
held; cuts come as `Boundary`s, transitions it drops as spans. PySceneDetect's detectors with their
score computed by OpenCV (bit-identical), TransNetV2 streamed on the absolute frame grid, their
combination, and `shots_from_cuts`, the one rule that turns merged cuts into spans. The Ray stage
(curation/detect.py) only drives a `ClipCutter` over a clip's frames.

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
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter
from scenedetect import AdaptiveDetector, ContentDetector, FrameTimecode

from curation.config import DetectorConfig

LATE_MARGIN = 2  # frames beyond a PySceneDetect detector's event buffer that the pass allows a cut to come late


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
        # How many frames after its frame a cut may come: the detector's own event buffer (adaptive:
        # its window, 2; content: its flash filter, min_scene_len), plus a margin.
        self.late = self.detector.event_buffer_length + LATE_MARGIN
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
    """Turns decoded frames into the small BGR images the detector reads; keeps swscale contexts.

    `many(frames)` does a run of frames at once: each frame's planes are shrunk into its own band of
    one tall small frame, and one swscale call converts the whole band. Conversion of a pixel reads
    only its own Y and its 2x2 block's U and V, so every band is what converting its frame alone
    gives (tested), without swscale's fixed cost per call, which is most of the cost at 256x144."""

    def __init__(self, target_width: int):
        self.target_width = target_width
        self.size: tuple[int, int] | None = None
        self._convert = VideoReformatter()
        self._tall: dict = {}  # (width, height, count) -> a reused tall yuv420p frame and its planes' bands

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        return self.many([frame])[0]

    def many(self, frames: list[av.VideoFrame]) -> list[np.ndarray]:
        if not frames:
            return []
        first = frames[0]
        if self.size is None:
            self.size = detection_size(first.width, first.height, self.target_width)
        width, height = self.size
        if not all(self._plane_path(f, width, height) for f in frames):
            return [self._one(f, width, height) for f in frames]
        target, bands = self._band_frames(width, height, len(frames))
        for frame, band in zip(frames, bands):
            _shrink_planes(frame, band)
        tall = self._to_bgr.reformat(target, format="bgr24").to_ndarray()
        return [tall[i * height : (i + 1) * height] for i in range(len(frames))]

    def _plane_path(self, frame: av.VideoFrame, width: int, height: int) -> bool:
        return (self.size != (frame.width, frame.height) and frame.format.name == "yuv420p" and width % 2 == 0
                and height % 2 == 0)  # fmt: skip

    def _one(self, frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
        if self.size == (frame.width, frame.height):
            return self._convert.reformat(frame, format="bgr24").to_ndarray()
        # Anything else (10-bit, 4:2:2/4:4:4, full-range JPEG YUV, RGB): PySceneDetect's own path,
        # the full-size frame to BGR, then OpenCV's linear resize. Slower, and exact.
        bgr = self._convert.reformat(frame, format="bgr24").to_ndarray()
        return cv2.resize(bgr, (width, height), interpolation=cv2.INTER_LINEAR)

    _to_bgr = VideoReformatter()

    def _band_frames(self, width: int, height: int, count: int):
        """A reused tall small frame of `count` bands and, per band, writable views of its Y, U, V."""
        key = (width, height, count)
        if key not in self._tall:
            target = av.VideoFrame(width, height * count, "yuv420p")
            planes = [np.frombuffer(p, np.uint8).reshape(-1, p.line_size) for p in target.planes]
            bands = [
                [planes[0][i * height : (i + 1) * height, :width]]
                + [plane[i * height // 2 : (i + 1) * height // 2, : width // 2] for plane in planes[1:]]
                for i in range(count)
            ]
            self._tall[key] = (target, bands)
        return self._tall[key]


def _shrink_planes(frame: av.VideoFrame, out: list[np.ndarray]) -> None:
    """Strided views of the decoder's Y, U, V planes (no copy), each resized as PySceneDetect resizes
    (linear) straight into `out`'s planes. Where the size ratio is an odd whole number k, linear
    interpolation samples exactly one source pixel (the middle of each k x k block, weight 1), so a
    strided copy gives OpenCV's result bit for bit at a fraction of its cost (720p and 4K to 256 wide)."""
    chroma_h, chroma_w = (frame.height + 1) // 2, (frame.width + 1) // 2
    sizes = ((frame.height, frame.width), (chroma_h, chroma_w), (chroma_h, chroma_w))
    for plane, (rows, cols), dest in zip(frame.planes, sizes, out):
        source = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
        step = cols // dest.shape[1]
        if step % 2 == 1 and cols == step * dest.shape[1] and rows == step * dest.shape[0]:
            np.copyto(dest, source[step // 2 :: step, step // 2 :: step])
        else:
            cv2.resize(source, (dest.shape[1], dest.shape[0]), dst=dest, interpolation=cv2.INTER_LINEAR)
        # swscale's YUV->BGR follows (the caller's): OpenCV's conversion shifts the hue of near-black pixels.


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
