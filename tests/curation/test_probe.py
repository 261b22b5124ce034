"""Tests of `curation/probe.py`: the probe stage, and which videos a resumed run skips."""

from __future__ import annotations

import pytest

from curation.config import CurationConfig
from curation.probe import ProbeRemote, Skipped, completed_video_ids
from curation.samples import write_synthetic_video
from manifests.io import write_part
from manifests.probe import ProbeError, fingerprint


def test_the_probe_stage_probes_new_content_skips_what_is_done_and_names_a_missing_file(tmp_path):
    video = write_synthetic_video(tmp_path / "v.mp4", [24, 24], size=(64, 48))
    probe = ProbeRemote(frozenset()).process(str(video.path))
    assert probe.num_frames == 48 and probe.video_id == fingerprint(str(video.path))
    skipped = ProbeRemote(frozenset({probe.video_id})).process(str(video.path))
    assert isinstance(skipped, Skipped) and skipped.video_id == probe.video_id
    with pytest.raises(ProbeError, match="missing.mp4: file not found; check the --input path"):
        ProbeRemote(frozenset()).process(str(tmp_path / "missing.mp4"))


def test_a_resumed_run_skips_ok_videos_whose_parts_are_all_there_and_failed_ones_unless_retried(tmp_path):
    def video(video_id, status):
        write_part(tmp_path, "videos", video_id, [{"video_id": video_id, "source_path": f"/{video_id}.mp4",
                                                    "status": status}])  # fmt: skip

    def part(table, video_id, row):
        write_part(tmp_path, table, video_id, [row])

    shot = {"shot_id": "x", "shot_index": 0, "source_path": "/x.mp4", "start_frame": 0, "end_frame": 24,
            "num_frames": 24, "start_s": 0.0, "end_s": 1.0, "duration_s": 1.0, "fps": 24.0, "width": 64,
            "height": 48, "status": "ok"}  # fmt: skip
    clip = {"clip_id": "c", "clip_index": 0, "start_frame": 0, "end_frame": 24, "status": "ok"}
    for video_id in ("whole", "no_clips"):
        video(video_id, "ok")
        part("shots", video_id, shot | {"video_id": video_id, "shot_id": f"{video_id}_0"})
    part("clips", "whole", clip | {"video_id": "whole", "clip_id": "whole_c000"})
    video("broken", "failed")
    assert completed_video_ids(CurationConfig(output=tmp_path)) == {"whole"}  # a deleted part redoes its video
    assert completed_video_ids(CurationConfig(output=tmp_path, retry_failed=False)) == {"whole", "broken"}
