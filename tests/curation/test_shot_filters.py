"""Tests of `curation/shot_filters.py`: the evidence a shot is judged by, the two rules every job
applies, and the order of the filter list (the first reason wins)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.config import CurationConfig
from curation.shot_filters import ShotEvidence, evidence, filter_reason, gradual_transition, too_short
from manifests.probe import VideoProbe


def _probe(num_frames: int = 100, fps: float = 25.0) -> VideoProbe:
    from fractions import Fraction

    pts = np.arange(num_frames, dtype=np.int64) * 40  # 1/1000 time base, 25 fps
    return VideoProbe(video_id="v", source_path="/v.mp4", size_bytes=1, container="mp4", codec="h264",
                      pix_fmt="yuv420p", width=64, height=48, coded_width=64, coded_height=48, rotation=0,
                      fps=fps, variable_fps=False, num_frames=num_frames, duration_s=num_frames / fps,
                      time_base=Fraction(1, 1000), has_audio=False, video_stream=0, pts=pts, pts_reliable=True)  # fmt: skip


def test_evidence_times_the_shot_from_pts_and_summarises_only_its_own_samples():
    from curation.darkness import Luma
    from curation.measures import Samples

    samples = {"luma": Samples({0: 9.0, 12: 1.0, 30: 2.0, 35: 50.0})}
    shot = evidence(_probe(), 10, 35, {(10, 35)}, samples, [Luma()])
    assert (shot.start, shot.end, shot.transition, shot.values) == (10, 35, True, {"mean_luma": 1.5})
    assert (shot.width, shot.height) == (64, 48)
    assert shot.seconds == pytest.approx(1.0)  # 25 frames at 25 fps, from their timestamps
    assert Samples({5: 1.0, 1: 3.0, 9: 2.0}).between(0, 9) == [3.0, 1.0]  # in frame order, end excluded
    assert evidence(_probe(), 0, 5, set(), extra={"text_area": 0.5}).values == {"text_area": 0.5}


def test_the_first_filter_with_a_reason_names_it_and_a_shot_passing_all_is_ok(tmp_path):
    config = CurationConfig(output=tmp_path, shots={"min_shot_seconds": 1.5})
    filters = [gradual_transition, too_short]
    transition = ShotEvidence(0, 8, 0.32, True)
    assert filter_reason(transition, config, filters).startswith("a gradual transition's 8 frames")
    assert filter_reason(transition, config, filters[::-1]) == "shorter than --min-shot-seconds 1.5"
    assert filter_reason(ShotEvidence(0, 50, 2.0, False), config, filters) is None
    assert filter_reason(transition, config, []) is None
