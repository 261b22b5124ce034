"""Tests of `curation/identity.py`: the shot settings an output was curated with are recorded; a
re-run with other ones is refused with the differences, or re-derives every video with --redo-shots."""

from __future__ import annotations

import json

import pytest

from curation.identity import FILE, SettingsChanged, check, settle, shot_settings
from curation.run import parse_args
from manifests import read_table, write_part
from manifests.schema import Status, VideoRecord
from tests.support.jobs import curate_one


def config_for(out, *flags):
    return parse_args(["--output", str(out), *flags])


def curated(out, *video_ids):
    for video_id in video_ids:
        write_part(out, "videos", video_id, [VideoRecord(video_id=video_id, source_path=f"/{video_id}.mp4",
                                                         status=Status.OK)])  # fmt: skip


def test_a_new_output_records_its_settings_and_the_same_or_speed_only_changes_resume(tmp_path):
    assert check(config_for(tmp_path)) == []
    assert json.loads((tmp_path / FILE).read_text()) == {"settings": shot_settings(config_for(tmp_path)),
                                                         "pending": []}  # fmt: skip
    curated(tmp_path, "a", "b")
    assert check(config_for(tmp_path)) == []
    assert check(config_for(tmp_path, "--decode-threads", "3", "--cpus-per-task", "2")) == []
    assert check(config_for(tmp_path, "--piece-min-seconds", "0")) == []  # pieces give the same rows


def test_an_output_recorded_before_clips_came_in_pieces_resumes(tmp_path):
    """`--piece-min-seconds` came later and is not recorded: a record written before it matches."""
    settings = shot_settings(config_for(tmp_path, "--piece-min-seconds", "5"))
    assert "piece_min_seconds" not in settings and "overlap_seconds" in settings
    (tmp_path / FILE).write_text(json.dumps({"settings": settings, "pending": []}))
    curated(tmp_path, "a")
    assert check(config_for(tmp_path)) == []


def test_changed_shot_settings_are_refused_with_each_difference_by_its_flag(tmp_path):
    check(config_for(tmp_path))
    curated(tmp_path, "a")
    with pytest.raises(SettingsChanged) as refused:
        check(config_for(tmp_path, "--detector", "content", "--min-shot-seconds", "8"))
    message = str(refused.value)
    assert "--detector: adaptive (recorded) -> content (now)" in message
    assert "--min-shot-seconds: 2.0 (recorded) -> 8.0 (now)" in message
    assert "--redo-shots" in message and "new --output" in message
    assert json.loads((tmp_path / FILE).read_text())["settings"]["min_shot_seconds"] == 2.0  # unchanged


def test_redo_shots_makes_every_curated_video_pending_until_a_run_re_derives_it(tmp_path):
    check(config_for(tmp_path))
    curated(tmp_path, "a", "b", "c")
    new = config_for(tmp_path, "--min-shot-seconds", "8", "--redo-shots")
    assert check(new) == ["a", "b", "c"]
    assert settle(new, ["a", "b", "c"], {"a"}) == ["b", "c"]  # interrupted after one video
    again = config_for(tmp_path, "--min-shot-seconds", "8")  # the new settings are the record now
    assert check(again) == ["b", "c"]
    assert settle(again, ["b", "c"], {"b", "c"}) == []
    assert check(again) == []


def test_an_output_from_before_the_record_adopts_its_run_json_settings(tmp_path):
    curated(tmp_path, "a")
    old = shot_settings(config_for(tmp_path)) | {"cpus_per_task": 1.0, "min_shot_seconds": 3.0}
    (tmp_path / "run.json").write_text(json.dumps({"config": {"shots": old}}))
    with pytest.raises(SettingsChanged, match="--min-shot-seconds: 3.0"):
        check(config_for(tmp_path))


def test_a_changed_filter_in_the_job_is_refused_then_redone_and_run_json_tells_the_truth(
    ray_local, tmp_path, multi_shot_video, capsys
):
    out = tmp_path / "out"
    assert curate_one(out, multi_shot_video) == 0  # shots of 2.5, 1.7, 3.8, 1.3, 2.1 s; 2 s minimum
    before = read_table(out, "shots")
    assert (before["status"] == "ok").sum() == 3
    assert curate_one(out, multi_shot_video, "--min-shot-seconds", "1.5") == 2
    assert "--min-shot-seconds: 2.0 (recorded) -> 1.5 (now)" in capsys.readouterr().err
    assert read_table(out, "shots").equals(before)
    assert json.loads((out / "run.json").read_text())["config"]["shots"]["min_shot_seconds"] == 2.0

    assert curate_one(out, multi_shot_video, "--min-shot-seconds", "1.5", "--redo-shots") == 0
    shots = read_table(out, "shots")
    ok = set(shots.loc[shots["status"] == "ok", "shot_id"])
    assert len(ok) == 4 and len(shots) == len(before)  # only the 1.3 s shot is filtered now
    combos = read_table(out, "combinations")
    assert len(combos) and all(set(members) <= ok for members in combos["shot_ids"])
    record = json.loads((out / "run.json").read_text())
    assert record["config"]["shots"]["min_shot_seconds"] == 1.5 and record["shot_settings_pending_videos"] == []
    assert record["this_run"]["videos_ok"] == 1
    assert curate_one(out, multi_shot_video, "--min-shot-seconds", "1.5") == 0  # resumes: nothing left to redo
    assert json.loads((out / "run.json").read_text())["this_run"]["videos_skipped_already_done"] == 1
