"""Tests of `manifests/probe.py`: probe a video: content fingerprint, stream facts and the exact PTS
of every frame."""

from __future__ import annotations

import numpy as np
import pytest

from curation.samples import write_synthetic_video
from manifests.probe import probe
from tests.support.detection import assert_cuts_match, detect_all


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
