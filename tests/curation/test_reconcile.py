"""Tests of `curation/reconcile.py`: the reconcile stage (driver): one video's clip results -> shots
on the source timeline, keyframe files and committed table parts. Each clip owns a frame range and
reports only its cuts; the merged cut list re-applies the minimum scene length across clip
boundaries (shots_from_cuts)."""

from __future__ import annotations

from curation.samples import write_synthetic_video
from manifests import read_table
from tests.support.jobs import run_job


def test_rotated_video_keyframes_are_upright(ray_local, tmp_path):
    import cv2

    video = write_synthetic_video(tmp_path / "portrait.mp4", [60, 60], size=(160, 96), rotation=90)
    out = tmp_path / "out"
    assert run_job(out, video.path, extra=["--min-shot-seconds", "0"]) == 0
    shots = read_table(out, "shots")
    assert (shots["width"] == 96).all() and (shots["height"] == 160).all()
    keyframe = cv2.imread(str(out / shots["keyframe_path"].iloc[0]))
    assert keyframe.shape[:2] == (160, 96)


def test_short_shots_are_flagged_not_dropped(ray_local, tmp_path, multi_shot_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path, extra=["--min-shot-seconds", "2.0"]) == 0
    shots = read_table(out, "shots").sort_values("start_frame")
    # Shots of 40 and 30 frames at 24 fps are under 2 s.
    assert shots["status"].tolist() == ["ok", "filtered", "ok", "filtered", "ok"]
    assert shots["filter_reason"].dropna().str.contains("min-shot-seconds").all()
