"""Tests of `curation/darkness.py`: the darkness filter, measured in the detection pass, flags a nearly
black shot before it is embedded."""

from __future__ import annotations

import pytest

from manifests import read_table
from tests.support.jobs import run_job


def write_video_with_a_dark_shot(path, fps=24, size=(160, 120)):
    """Three 48-frame shots: a bright one, a nearly black one (a held fade), a bright one."""
    import av
    import numpy as np

    rng = np.random.default_rng(3)
    colours = [(200, 120, 60), (6, 5, 8), (60, 160, 210)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for colour in colours:
            for _ in range(48):
                image = np.clip(np.array(colour, np.float32) + rng.normal(0, 2, (size[1], size[0], 3)), 0, 255)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_a_dark_shot_filter_is_one_rule_in_the_list_and_flags_dark_shots_before_embedding(ray_local, tmp_path):
    from curation.config import CurationConfig
    from curation.darkness import too_dark
    from curation.run import SHOT_FILTERS
    from curation.shot_filters import ShotEvidence, filter_reason

    assert too_dark in SHOT_FILTERS  # a filter is its own module and one entry of the job's list
    off = CurationConfig(output=tmp_path / "o")  # the default: off, whatever the luma
    assert filter_reason(ShotEvidence(0, 48, 2.0, False, values={"mean_luma": 1.5}), off, SHOT_FILTERS) is None
    video = write_video_with_a_dark_shot(tmp_path / "dark.mp4")
    out = tmp_path / "out"
    assert run_job(out, video, extra=["--min-mean-luma", "30", "--min-shot-seconds", "1"]) == 0
    shots = read_table(out, "shots").sort_values("start_frame")
    assert shots["start_frame"].tolist() == [0, 48, 96]
    assert shots["status"].tolist() == ["ok", "filtered", "ok"]
    reason = shots["filter_reason"].iloc[1]
    assert reason.startswith("darker than --min-mean-luma 30 (mean luma ") and float(reason.split()[-3]) < 15
    embedded = set(read_table(out, "shot_embeddings")["shot_id"])
    assert embedded == set(shots.loc[shots["status"] == "ok", "shot_id"])  # the dark shot is never embedded


def test_mean_luma_is_bt601_of_a_bgr_image():
    import numpy as np

    from curation.darkness import mean_luma

    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 1] = 100  # pure green
    assert mean_luma(bgr) == pytest.approx(100 * 0.587, abs=1e-9)
