"""Tests of `curation/motion.py`: motion from the codec's vectors, the frame-difference fallback,
the weakest patch inside the active picture, and the static filter."""

from __future__ import annotations

import av
import numpy as np

from curation.config import CurationConfig
from curation.measures import ShotSpan
from curation.motion import GRID, Motion, moving_blocks, static, vector_motion
from curation.shot_filters import ShotEvidence
from manifests.frames import open_video


def _write(path, frames, codec="libx264"):
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p" if codec == "libx264" else "yuvj420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def _measure(path, images=False):
    motion, samples = Motion(), []
    with open_video(path, motion_vectors=True) as (container, stream):
        for index, frame in enumerate(container.decode(stream)):
            image = frame.to_ndarray(format="bgr24")[::4, ::4] if images else None
            samples.append(motion.take(index, frame, image))
    return motion.summarise(samples, ShotSpan(0, len(samples), 160, 96, 0))


def _panning(shift):
    rng = np.random.default_rng(0)
    texture = (rng.random((96, 400, 3)) * 255).astype(np.uint8)
    texture = np.asarray(np.repeat(np.repeat(texture[::4, ::4], 4, 0), 4, 1))  # blocky: a clear match
    return [np.ascontiguousarray(texture[:96, t * shift : t * shift + 160]) for t in range(24)]


def test_a_pan_moves_by_its_speed_and_a_held_frame_not_at_all(tmp_path):
    _write(tmp_path / "pan.mp4", _panning(3))
    _write(tmp_path / "still.mp4", [_panning(3)[0]] * 24)
    pan, still = _measure(tmp_path / "pan.mp4"), _measure(tmp_path / "still.mp4")
    # 3 px a frame; a reference may lie a few frames away (B-frames), so the scale is per reference step
    assert pan["motion_source"] == "motion_vectors" and 2.5 < pan["motion_mean"] < 12.0
    assert pan["motion_min_patch"] > 1.0  # every region moves in a pan
    assert still["motion_mean"] == 0.0 and still["motion_min_patch"] == 0.0
    config = CurationConfig(output=tmp_path / "o")
    assert static(ShotEvidence(0, 24, 1.0, False, values=still), config).startswith("static: motion 0.000")
    assert static(ShotEvidence(0, 24, 1.0, False, values=pan), config) is None


def test_an_intra_only_codec_falls_back_to_frame_differences(tmp_path):
    _write(tmp_path / "mjpeg.avi", _panning(3), codec="mjpeg")
    got = _measure(tmp_path / "mjpeg.avi", images=True)
    assert got["motion_source"] == "frame_diff" and got["motion_min_patch"] is None and got["motion_mean"] > 1.0
    config = CurationConfig(output=tmp_path / "o")
    held = {"motion_mean": 0.01, "motion_min_patch": None, "motion_source": "frame_diff"}
    assert "--min-frame-change" in static(ShotEvidence(0, 24, 1.0, False, values=held), config)


def test_the_weakest_patch_counts_only_regions_inside_the_active_picture():
    cells = GRID * GRID
    patch_area = 160 * 96 / cells
    sums = np.full(cells, patch_area, np.float32)  # 1 px/frame everywhere ...
    sums[:GRID] = 0.0  # ... but the top row of patches, still (a letterbox bar)
    whole = Motion().summarise([(sums, None)], ShotSpan(0, 1, 160, 96, 0))
    assert whole["motion_min_patch"] == 0.0 and whole["motion_mean"] == 0.75
    cropped = ShotSpan(0, 1, 160, 96, 0, {"crop_x": 0, "crop_y": 24, "crop_w": 160, "crop_h": 72})
    assert Motion().summarise([(sums, None)], cropped)["motion_min_patch"] == 1.0
    config = CurationConfig(output="o", shots={"min_motion_patch": 0.5})
    assert static(ShotEvidence(0, 1, 1.0, False, values=whole), config).startswith("static region")


def test_a_frame_without_vectors_gives_none():
    frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
    assert vector_motion(frame) is None
    assert Motion().take(0, frame, None) is None


def test_reading_a_frames_vectors_leaves_no_reference_to_the_frame(tmp_path):
    """PyAV's `frame.side_data` caches a container on the frame that refers back to it: a cycle that
    kept sampled decoded frames (decoder buffers) alive until the cycle collector ran."""
    import sys

    _write(tmp_path / "pan.mp4", _panning(3))
    with open_video(tmp_path / "pan.mp4", motion_vectors=True) as (container, stream):
        frames = list(container.decode(stream))
        frame = frames[5]
        before = sys.getrefcount(frame)
        assert vector_motion(frame) is not None  # a P/B frame of a pan carries vectors
        assert sys.getrefcount(frame) == before
        other = frames[6]
        before = sys.getrefcount(other)
        other.side_data.get("MOTION_VECTORS")  # what the cycle looks like, so the check can fail
        assert sys.getrefcount(other) > before


def test_moving_blocks_are_found_as_the_plain_test_finds_them(tmp_path):
    """The one-int64 test of (motion_x, motion_y) marks the blocks `motion_x | motion_y` marks, on a
    real frame's vectors and on records with each sign and zero pattern; another layout takes the plain test."""
    from av.sidedata.sidedata import SideDataContainer

    _write(tmp_path / "pan.mp4", _panning(3))
    with open_video(tmp_path / "pan.mp4", motion_vectors=True) as (container, stream):
        records = [SideDataContainer(f).get("MOTION_VECTORS") for f in container.decode(stream)]
    real = np.concatenate([r.to_ndarray() for r in records if r is not None])
    assert real.dtype.itemsize == 40 and real.dtype.fields["motion_y"][1] == real.dtype.fields["motion_x"][1] + 4
    made = np.zeros(6, real.dtype)
    made["motion_x"], made["motion_y"] = [0, 1, 0, -1, -2147483648, 0], [0, 0, -1, 5, 0, 2147483647]
    made["w"] = 16  # other fields never count
    for vectors in (real, made):
        assert np.array_equal(moving_blocks(vectors) != 0, (vectors["motion_x"] | vectors["motion_y"]) != 0)
    assert np.count_nonzero(moving_blocks(real)) > 0
    packed = np.zeros(3, [("motion_x", "<i4"), ("w", "u1"), ("motion_y", "<i4")])
    packed["motion_y"] = [0, 3, 0]
    assert np.array_equal(moving_blocks(packed) != 0, [False, True, False])
