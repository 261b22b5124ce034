"""Tests of `curation/shot_frames.py`: the frames later stages need, kept during the one decode pass
of shot detection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curation.embedders import ColorLayoutEmbedder
from curation.run import main
from curation.shot_frames import FrameKeeper, FrameSpec, frames_for_shot
from manifests import read_table
from manifests.sampling import nearest
from tests.support.curation_reference import FLAGS, record
from tests.support.reference_check import REFERENCE, assert_same_rows

pytestmark = pytest.mark.usefixtures("stages_travel_by_value")


def _assert_equal_to_a_separate_decode(out) -> None:
    """Every embedding equals the embedding of its recorded frames decoded again from the source."""
    from manifests.frames import read_shot_frames

    shots = read_table(out, "shots").set_index("shot_id")
    embeddings = read_table(out, "shot_embeddings")
    assert len(embeddings) and set(embeddings["status"]) == {"ok"}
    for row in embeddings.to_dict("records"):
        shot = shots.loc[row["shot_id"]].to_dict() | {"shot_id": row["shot_id"]}
        frames = [int(f) for f in row["frames"]]
        assert all(shot["start_frame"] <= f < shot["end_frame"] for f in frames)
        decoded = read_shot_frames(shot, indices=[f - shot["start_frame"] for f in frames], max_side=320)
        again = ColorLayoutEmbedder().embed([decoded])[0].astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(np.asarray(row["embedding"], np.float32), again, atol=2e-3)


def test_one_decode_pass_embeddings_equal_embedding_from_a_separate_decode(ray_local, tmp_path, reference_videos):
    out = tmp_path / "out"
    assert main(["--input", *map(str, reference_videos), "--output", str(out), *FLAGS]) == 0
    before, after = json.loads(REFERENCE.read_text()), json.loads(json.dumps(record(out)))
    for table in ("videos", "clips", "shots"):  # detection is untouched by keeping frames
        # (the quality-signal columns came later: the recorded ones must be the same)
        assert_same_rows(
            before[table], [{k: v for k, v in row.items() if k in before[table][0]} for row in after[table]], table
        )
    embeddings = read_table(out, "shot_embeddings")
    assert len(embeddings) == len(before["shot_embeddings"]) and set(embeddings["status"]) == {"ok"}
    _assert_equal_to_a_separate_decode(out)
    reference = {row["shot_id"]: np.asarray(row["embedding"], np.float32) for row in before["shot_embeddings"]}
    for row in embeddings.to_dict("records"):  # frames near the uniform ones describe the shot as before
        assert float(np.asarray(row["embedding"], np.float32) @ reference[row["shot_id"]]) > 0.99


def test_one_decode_pass_on_rotated_variable_rate_video_with_the_content_detector(ray_local, tmp_path):
    """Rotation, variable frame rate, late cuts (the content detector's flash filter), shots across
    clip boundaries: the kept frames are still the frames a separate decode reads."""
    from curation.samples import write_synthetic_video

    lengths = [70, 55, 120, 64, 90]
    times, t = [], 0.0
    for i in range(sum(lengths)):
        times.append(t)
        t += 1 / 24 if i % 3 else 1 / 30  # variable frame rate
    video = write_synthetic_video(tmp_path / "rotated_vfr.mp4", lengths, size=(192, 128), rotation=90, seed=5,
                                  frame_times=times, gop=40)  # fmt: skip
    out = tmp_path / "out"
    assert main(["--input", str(video.path), "--output", str(out), "--detector", "content", "--clip-minutes",
                 f"{100 / 24 / 60}", "--min-shot-seconds", "1"]) == 0  # fmt: skip
    shots = read_table(out, "shots")
    assert len(shots) == len(lengths) and (shots["rotation"] == 90).all()
    _assert_equal_to_a_separate_decode(out)


def test_frame_keeper_is_exact_for_short_shots_and_bounded_for_long_ones():
    spec = FrameSpec(count=8, max_side=None)

    class Fake:  # stands in for av.VideoFrame: FrameSpec.image is replaced below
        def __init__(self, index):
            self.index = index

    image = lambda frame, rotation: np.full((2, 2, 3), frame.index % 256, np.uint8)  # noqa: E731
    object.__setattr__(spec, "image", image)  # frozen dataclass: a test double for the conversion
    keeper = FrameKeeper({"embed": spec}, start=0, end=1000, num_frames=1000, min_scene_frames=15,
                         rotation=0, capacity=16)  # fmt: skip
    most = 0
    for index in range(1000):
        keeper.push(index, Fake(index))
        held = {id(frame) for _, frame in keeper.open.candidates} | {id(frame) for _, frame in keeper.recent}
        most = max(most, len(held))
        if index == 18:
            keeper.cut(16)  # emitted 2 frames late, as the adaptive detector does
    clip = keeper.finish()
    # bounded: the grid (capacity + room for late cuts) plus the frames a cut may still come late for
    # (the last min_scene_frames + 9), which the newest candidates share, and the frame just pushed
    assert most <= (16 + 8) + (15 + 8 + 1) + 1
    short = frames_for_shot(0, 16, [clip], "embed", spec)
    assert short.frames == spec.offsets(16)  # a short shot gets exactly the uniform frames
    long = frames_for_shot(16, 1000, [clip], "embed", spec)
    wanted = [16 + o for o in spec.offsets(984)]
    assert max(abs(a - b) for a, b in zip(long.frames, wanted)) <= 984 / 12
    assert [int(im[0, 0, 0]) for im in long.images] == [f % 256 for f in long.frames]
    assert nearest([5, 10], [0, 8, 12]) == [8, 8]


def test_viclip_frames_from_the_pass_equal_the_official_preprocessing():
    """ViCLIP's kept frames are resized to 224x224 from full size, as its preprocessing does; resizing
    them again to the same size changes nothing, so both paths feed the model the same pixels."""
    import cv2

    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (8, 240, 320, 3), np.uint8)
    spec = FrameSpec(count=8, rule="viclip", max_side=None, square=224)
    kept = spec.finish(full)
    again = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR) for f in kept])
    np.testing.assert_array_equal(kept, again)
