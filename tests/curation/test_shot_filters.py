"""Tests of `curation/shot_filters.py`: shot filters: each may flag a shot `filtered`, with its
reason. A filtered shot stays in shots.parquet (so the video's spans still tile it) but is never
embedded, combined or captioned."""

from __future__ import annotations

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
    from curation.shot_filters import FILTERS, ShotEvidence, filter_reason, too_dark

    assert too_dark in FILTERS
    off = CurationConfig(output=tmp_path / "o")  # the default: off, whatever the luma
    assert filter_reason(ShotEvidence(0, 48, 2.0, False, [1.0, 2.0]), off) is None
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
