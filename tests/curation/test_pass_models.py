"""Tests of `curation/pass_models.py`: models over the frames the detection pass kept run before
a video is committed, skip shots an earlier filter flags, and a crashed model actor fails only its
video, which a re-run redoes."""

from __future__ import annotations

import shutil

from curation.config import CurationConfig
from curation.run import run_stages
from manifests import read_table
from tests.support import crash_stages


def _config(out, inputs, **shots):
    return CurationConfig(inputs=inputs, output=out, shots={"clip_minutes": 96 / 24 / 60, "min_shot_seconds": 1,
                          **shots}, combine={"min_shot_frames": 20, "within": "video", "scenes": 2})  # fmt: skip


def test_text_columns_come_from_the_model_for_kept_shots_only(ray_local, tmp_path, long_video):
    out = tmp_path / "out"
    run_stages([str(long_video.path)], _config(out, [str(long_video.path)], min_shot_seconds=2.5))
    shots = read_table(out, "shots").sort_values("start_frame")
    short = shots["duration_s"] < 2.5  # flagged by an earlier filter: never read
    assert short.any() and (~short).any()
    assert shots.loc[short, "text_area"].isna().all()
    assert shots.loc[~short, "text_area"].notna().all()  # shots across clip edges (95, 200) included
    assert (shots.loc[~short, "text_area"] == 0).all()  # the synthetic shots carry no text


def test_a_crashed_text_actor_fails_only_its_video_and_the_rerun_redoes_it(ray_local, tmp_path, reference_videos):
    folder = tmp_path / "inputs"
    folder.mkdir()
    inputs = [str(shutil.copy(reference_videos[0], folder / "good.mp4")),
              str(shutil.copy(reference_videos[1], folder / "crash.mp4"))]  # fmt: skip
    out = tmp_path / "out"
    summary = run_stages(inputs, _config(out, inputs), swap={"text": crash_stages.CrashingText}).summary
    videos = read_table(out, "videos").set_index("source_path")
    assert summary.videos_ok == 1 and summary.videos_failed == 1
    bad = videos.loc[str((folder / "crash.mp4").resolve())]
    assert bad["status"] == "failed" and bad["error_stage"] == "text" and "worker crashed" in bad["error"]
    assert run_stages(inputs, _config(out, inputs)).summary.videos_ok == 1
    assert set(read_table(out, "videos")["status"]) == {"ok"}
