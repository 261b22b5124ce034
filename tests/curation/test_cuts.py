"""Tests of `curation/cuts.py`: cut detection behind one interface: PySceneDetect's detectors with a
bit-identical fast score, its exact path for other pixel formats, TransNetV2 and PySceneDetect
combined, and the one rule that turns merged cuts into spans."""

from __future__ import annotations

import numpy as np
import pytest

from curation.config import DetectorConfig
from curation.cuts import shots_from_cuts
from curation.samples import write_synthetic_video
from tests.support.detection import detect_all


def test_shots_cover_the_video_and_respect_minimum_length():
    assert shots_from_cuts([10, 12, 50], 100, min_scene_frames=5) == [(0, 10), (10, 50), (50, 100)]
    assert shots_from_cuts([], 7, 15) == [(0, 7)]


@pytest.mark.parametrize("kind", ["adaptive", "content"])
def test_fast_frame_score_is_bit_identical_to_pyscenedetects(kind):
    from scenedetect import AdaptiveDetector, ContentDetector

    from curation.cuts import make_detector

    rng = np.random.default_rng(0)
    ours = make_detector(DetectorConfig(kind=kind))
    theirs = AdaptiveDetector() if kind == "adaptive" else ContentDetector()
    images = [rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(20)]
    images += [np.full((36, 64, 3), v, np.uint8) for v in (0, 1, 2, 3, 250)]  # near-black and flat frames
    for i, image in enumerate(images):
        assert ours._calculate_frame_score(i, image) == theirs._calculate_frame_score(i, image)


@pytest.mark.parametrize("kind", ["adaptive", "content"])
@pytest.mark.parametrize("min_scene_frames", [1, 6, 15])
def test_a_cut_never_comes_later_than_the_pass_allows(kind, min_scene_frames):
    """The frame keeper holds decoded frames for `late` frames only (curation/shot_frames.py), so no
    detector may confirm a cut later than that: shots of 1 to 40 frames, flashes between them."""
    from curation.cuts import SceneDetectCuts

    rng = np.random.default_rng(min_scene_frames)
    cuts = SceneDetectCuts(DetectorConfig(kind=kind, min_scene_frames=min_scene_frames), fps=24.0)
    index, found = 0, []
    while index < 1500:
        colour = rng.integers(0, 256, 3)
        for _ in range(int(rng.integers(1, 40))):
            image = np.empty((36, 64, 3), np.uint8)
            image[:] = colour if rng.random() > 0.05 else 255 - colour  # now and then a one-frame flash
            image += rng.integers(0, 3, image.shape, dtype=np.uint8)
            for boundary in cuts.feed(index, image):
                assert index - boundary.frame <= cuts.late, (kind, index, boundary)
                found.append(boundary.frame)
            index += 1
    assert len(found) > 30  # many cuts, many of them held back by the minimum scene length


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p", "yuvj420p"])
def test_other_pixel_formats_take_pyscenedetects_exact_path(tmp_path, pix_fmt):
    """Not 8-bit 4:2:0: the detector sees exactly the image PySceneDetect computes (full-size BGR,
    then its linear resize), so the cuts are PySceneDetect's own."""
    import av
    import cv2
    from scenedetect import AdaptiveDetector, detect

    from curation.cuts import DetectionFrames, detection_size

    source = write_synthetic_video(tmp_path / "src.mp4", [40, 55, 30, 45], fps=24.0, size=(640, 360), seed=7)
    path = tmp_path / f"{pix_fmt}.mkv"
    with av.open(str(source.path)) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 640, 360, pix_fmt
        for frame in src.decode(video=0):
            for packet in stream.encode(frame.reformat(format=pix_fmt)):
                dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    ours = DetectionFrames(256)
    with av.open(str(path)) as container:
        for frame in list(container.decode(video=0))[:5]:
            assert frame.format.name == pix_fmt
            expected = cv2.resize(frame.to_ndarray(format="bgr24"), detection_size(640, 360, 256),
                                  interpolation=cv2.INTER_LINEAR)  # fmt: skip
            assert np.array_equal(ours(frame), expected)
    reference = [scene[0].frame_num for scene in detect(str(path), AdaptiveDetector(), backend="pyav")][1:]
    assert detect_all(path)[2] == reference


def test_the_combination_keeps_one_cut_where_both_fire_and_every_cut_only_one_finds():
    """Streamed in decode order with each detector's own lateness, the merged boundaries equal the
    offline rule: PySceneDetect's frame where both fire within min_scene_frames (keep mode), and
    TransNetV2's dropped transitions where --transition-frames drop (its span wins)."""
    from curation.cuts import Boundary, EitherCuts

    class Source:
        def __init__(self, cuts, late, drop=False, spans=()):
            self.cuts, self.late, self.drop, self.transitions, self.settled = dict(cuts), late, drop, list(spans), 0

        def feed(self, index, image):
            self.settled = index + 1 - self.late
            return [c for at, c in self.cuts.items() if at == index]

        def finish(self, at_end):
            self.settled = 1 << 62
            return []

    def run(sd, tn):
        merged = EitherCuts(sd, tn, 15)
        out = [b for i in range(400) for b in merged.feed(i, None, None)] + merged.finish(True)
        return [(b.frame, b.forced) for b in out]

    # scenedetect: cuts at 50, 120 (TransNetV2 says 122), 300; TransNetV2 alone: 200 (a dissolve).
    sd = {52: Boundary(50), 123: Boundary(120), 302: Boundary(300)}
    tn = {180: Boundary(122), 260: Boundary(200)}
    assert run(Source(sd, 17), Source(tn, 253)) == [(50, False), (120, False), (200, False), (300, False)]
    # drop: TransNetV2's transition [195, 210) wins over PySceneDetect's cut at 203 inside it.
    sd = {52: Boundary(50), 205: Boundary(203)}
    tn = {260: Boundary(195, True), 261: Boundary(210, True)}
    got = run(Source(sd, 17), Source(tn, 253, drop=True, spans=[(195, 210)]))
    assert got == [(50, False), (195, True), (210, True)]


@pytest.mark.parametrize("size", [(1280, 720), (768, 432), (1920, 1080), (640, 360)])
def test_detection_images_made_in_runs_equal_each_frame_shrunk_by_opencv_and_converted_alone(tmp_path, size):
    """The fast paths (a strided copy where the size ratio is an odd whole number: 5 for 720p, 3 for
    768x432; one swscale call for a run of frames) give the images of the plain path bit for bit:
    each plane resized by OpenCV's linear filter, each frame converted by swscale on its own."""
    import av
    import cv2
    from av.video.reformatter import VideoReformatter

    from curation.cuts import DetectionFrames, detection_size

    video = write_synthetic_video(tmp_path / "v.mp4", [5, 4], fps=24.0, size=size, seed=5)
    with av.open(str(video.path)) as container:
        frames = list(container.decode(video=0))
    width, height = detection_size(*size, 256)
    convert = VideoReformatter()

    def plain(frame):
        small = av.VideoFrame(width, height, "yuv420p")
        shapes = ((height, width), (height // 2, width // 2), (height // 2, width // 2))
        chroma = ((frame.height + 1) // 2, (frame.width + 1) // 2)
        for plane, target, (rows, cols), (h, w) in zip(frame.planes, small.planes,
                                                        ((frame.height, frame.width), chroma, chroma), shapes):  # fmt: skip
            source = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
            out = np.frombuffer(target, np.uint8).reshape(-1, target.line_size)[:h, :w]
            cv2.resize(source, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)
        return convert.reformat(small, format="bgr24").to_ndarray()

    fast = DetectionFrames(256)
    expected = [plain(f) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(fast.many(frames[:4]) + fast.many(frames[4:]), expected))
    assert np.array_equal(fast(frames[-1]), expected[-1])
