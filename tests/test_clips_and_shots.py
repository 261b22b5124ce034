import numpy as np
import pytest

from curation.config import DetectorConfig
from curation.detect import detect_clip, shots_from_cuts
from curation.samples import write_synthetic_video
from curation.split import plan_clips
from manifests.probe import probe
from tests.conftest import CLIP_FRAMES, CLIP_MINUTES


def detect_all(path, clip_minutes=10.0, kind="adaptive", overlap=48):
    p = probe(str(path))
    cuts = []
    windows = plan_clips(p.num_frames, p.fps, clip_minutes, overlap)
    for w in windows:
        result = detect_clip(
            str(path),
            w,
            p.pts,
            p.fps,
            p.rotation,
            DetectorConfig(kind=kind),
            thumbnail_every=12,
            thumbnail_max_side=128,
        )
        assert result.error is None
        cuts += result.cuts
    return p, windows, sorted(cuts)


def assert_cuts_match(found, expected, tolerance=1):
    assert len(found) == len(expected), (found, expected)
    assert all(abs(f - e) <= tolerance for f, e in zip(found, expected)), (found, expected)


def test_clip_windows_cover_every_frame_once():
    windows = plan_clips(1000, 24.0, CLIP_MINUTES, overlap_frames=30)
    owned = np.concatenate([np.arange(w.start_frame, w.end_frame) for w in windows])
    assert np.array_equal(owned, np.arange(1000))
    assert all(
        w.decode_start == max(0, w.start_frame - 30) and w.decode_end == min(1000, w.end_frame + 30) for w in windows
    )


def test_short_tail_is_folded_into_the_last_clip():
    windows = plan_clips(CLIP_FRAMES * 3 + 10, 24.0, CLIP_MINUTES, 0)
    assert len(windows) == 3 and windows[-1].end_frame == CLIP_FRAMES * 3 + 10


@pytest.mark.parametrize("kind", ["adaptive", "content"])
def test_detected_cuts_match_the_known_cuts(multi_shot_video, kind):
    _, _, cuts = detect_all(multi_shot_video.path, kind=kind)
    assert_cuts_match(cuts, multi_shot_video.cuts)


def test_cuts_near_clip_boundaries_are_found_once_and_spanning_shot_stays_whole(long_video):
    p, windows, cuts = detect_all(long_video.path, clip_minutes=CLIP_MINUTES)
    assert len(windows) >= 4  # really split into clips
    assert_cuts_match(cuts, long_video.cuts)
    spans = shots_from_cuts(cuts, p.num_frames, 15)
    boundaries = [w.start_frame for w in windows[1:]]
    spanning = [s for s in spans if any(s[0] < b < s[1] for b in boundaries)]
    assert any(abs(a - 95) <= 1 and abs(b - 200) <= 1 for a, b in spanning), spans
    # Same result as one continuous pass over the whole video.
    _, _, single_pass = detect_all(long_video.path, clip_minutes=10.0)
    assert cuts == single_pass


def test_shots_cover_the_video_and_respect_minimum_length():
    assert shots_from_cuts([10, 12, 50], 100, min_scene_frames=5) == [(0, 10), (10, 50), (50, 100)]
    assert shots_from_cuts([], 7, 15) == [(0, 7)]


def test_variable_frame_rate_video_is_detected_and_timed_from_pts(tmp_path):
    steps = np.where(np.arange(150) % 2 == 0, 1 / 30, 1 / 20)
    times = np.concatenate([[0.0], np.cumsum(steps)[:-1]]).tolist()
    video = write_synthetic_video(tmp_path / "vfr.mp4", [50, 50, 50], frame_times=times)
    p = probe(str(video.path))
    assert p.variable_fps and p.num_frames == 150
    assert p.frame_seconds(50) == pytest.approx(times[50], abs=1e-3)
    assert p.frame_seconds(100) == pytest.approx(times[100], abs=1e-3)
    _, _, cuts = detect_all(video.path)
    assert_cuts_match(cuts, [50, 100])


def test_rotation_swaps_displayed_size(tmp_path):
    video = write_synthetic_video(tmp_path / "rot.mp4", [30, 30], size=(160, 96), rotation=90)
    p = probe(str(video.path))
    assert p.rotation == 90 and (p.width, p.height) == (96, 160) and (p.coded_width, p.coded_height) == (160, 96)


def test_constant_rate_is_not_reported_as_variable(multi_shot_video):
    p = probe(str(multi_shot_video.path))
    assert not p.variable_fps and p.fps == pytest.approx(24.0, rel=1e-3) and p.num_frames == 270


@pytest.mark.parametrize("kind", ["adaptive", "content"])
def test_fast_frame_score_is_bit_identical_to_pyscenedetects(kind):
    from scenedetect import AdaptiveDetector, ContentDetector

    from curation.detect import make_detector

    rng = np.random.default_rng(0)
    ours = make_detector(DetectorConfig(kind=kind))
    theirs = AdaptiveDetector() if kind == "adaptive" else ContentDetector()
    images = [rng.integers(0, 256, (36, 64, 3), dtype=np.uint8) for _ in range(20)]
    images += [np.full((36, 64, 3), v, np.uint8) for v in (0, 1, 2, 3, 250)]  # near-black and flat frames
    for i, image in enumerate(images):
        assert ours._calculate_frame_score(i, image) == theirs._calculate_frame_score(i, image)


@pytest.mark.parametrize("pix_fmt", ["yuv420p10le", "yuv444p", "yuvj420p"])
def test_other_pixel_formats_take_pyscenedetects_exact_path(tmp_path, pix_fmt):
    """Not 8-bit 4:2:0: the detector sees exactly the image PySceneDetect computes (full-size BGR,
    then its linear resize), so the cuts are PySceneDetect's own."""
    import av
    import cv2
    from scenedetect import AdaptiveDetector, detect

    from curation.detect import DetectionFrames, detection_size

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
