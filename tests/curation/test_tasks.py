"""Tests of `curation/tasks.py`: the one data model of what moves between the stages, and the rule it
makes possible: no stage module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

from curation.tasks import ClipResult, ClipWindow, VideoTask

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("probe", "split", "detect", "text", "aesthetic", "reconcile", "embed", "combine", "annotate")


def test_a_clip_owns_its_half_open_range_and_a_task_is_named_by_its_path_until_probed():
    window = ClipWindow(1, 100, 200, 60, 240)
    assert window.owns(100) and window.owns(199) and not window.owns(200) and not window.owns(99)
    assert ClipResult(window).cuts == [] and ClipResult(window).samples == {}
    task = VideoTask("/videos/a.mp4")
    assert task.video_id.startswith("path-") and task.clips == [] and task.signals == {}


def test_no_stage_module_imports_another_and_the_job_lists_them_in_order():
    from curation.config import CurationConfig

    for stage in STAGES:
        tree = ast.parse((ROOT / "curation" / f"{stage}.py").read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        others = {f"curation.{s}" for s in STAGES if s != stage}
        assert not imported & others, f"curation/{stage}.py imports {sorted(imported & others)}"
    assert CurationConfig  # the stage list itself is checked by the job's run.json test (tests/e2e)


def test_a_video_of_every_shot_kind_curates_to_the_recorded_tables_row_for_row(ray_local, tmp_path):
    """Hard cut, dissolve, dark, short, held and letterboxed shots: every table row for row as the job
    wrote them before curation/tasks.py and curation/cuts.py (tests/support/curation_reference.py)."""
    import json

    from curation.run import main
    from tests.support.curation_reference import KIND_FLAGS, record, write_kinds_video
    from tests.support.reference_check import assert_same_rows

    before = json.loads((ROOT / "tests" / "data" / "curation_kinds_reference.json").read_text())
    out = tmp_path / "out"
    assert main(["--input", str(write_kinds_video(tmp_path / "videos")), "--output", str(out), *KIND_FLAGS]) == 0
    after = json.loads(json.dumps(record(out)))
    for table in before:
        assert_same_rows(before[table], after[table], table)
    reasons = [row["filter_reason"] or "ok" for row in after["shots"]]
    assert [r.split(" ")[0] for r in reasons] == ["ok", "ok", "darker", "shorter", "static:", "ok"]


def test_a_clips_pieces_cover_its_range_once_aligned_to_the_samples_with_the_clips_context():
    clip = ClipWindow(1, 1000, 2000, 952, 2048)
    pieces = clip.pieces(3, align=12, overlap=48, num_frames=5000)
    assert [(p.start_frame, p.end_frame) for p in pieces] == [(1000, 1336), (1336, 1672), (1672, 2000)]
    assert all(p.clip_index == 1 and (p.start_frame - clip.start_frame) % 12 == 0 for p in pieces)
    assert (pieces[0].decode_start, pieces[-1].decode_end) == (clip.decode_start, clip.decode_end)
    assert [(p.decode_start, p.decode_end) for p in pieces[1:]] == [(1288, 1720), (1624, 2048)]
    edge = ClipWindow(0, 0, 100, 0, 100).pieces(2, align=12, overlap=48, num_frames=100)
    assert [(p.start_frame, p.end_frame, p.decode_start, p.decode_end) for p in edge] == [(0, 60, 0, 100),
                                                                                          (60, 100, 12, 100)]  # fmt: skip
    assert len(ClipWindow(0, 0, 30, 0, 30).pieces(8, align=12, overlap=0, num_frames=30)) == 3  # never under `align`


def test_a_clips_result_joined_from_its_pieces_holds_all_they_found():
    from curation.shot_frames import ClipFrames, ShotFrames, Uncertain

    clip = ClipWindow(0, 0, 200, 0, 240)
    a, b = clip.pieces(2, align=10, overlap=20, num_frames=240)
    first = ClipResult(a, cuts=[40, 90], forced=[90], transitions=[(85, 95)], thumbnails={0: b"x", 50: b"y"},
                       samples={"luma": {0: 1.0, 50: 2.0}, "motion": {4: "m"}}, frames_decoded=120, seconds=1.0)  # fmt: skip
    first.frames = ClipFrames({40: {"embed": ShotFrames([41], None)}}, {40: 90}, [Uncertain(90, 100, [92], {})])
    second = ClipResult(b, cuts=[150], thumbnails={100: b"z"}, samples={"luma": {100: 3.0}}, frames_decoded=140,
                        seconds=2.0, error="b.mp4: decoding failed")  # fmt: skip
    second.frames = ClipFrames({}, {}, [Uncertain(100, 150, [100], {})])
    joined = ClipResult.joined(clip, [first, second])
    assert joined.window == clip and joined.cuts == [40, 90, 150] and joined.forced == [90]
    assert joined.transitions == [(85, 95)] and sorted(joined.thumbnails) == [0, 50, 100]
    assert joined.samples == {"luma": {0: 1.0, 50: 2.0, 100: 3.0}, "motion": {4: "m"}}
    assert list(joined.frames.shots) == [40] and joined.frames.ends == {40: 90}
    assert [(u.start, u.end) for u in joined.frames.uncertain] == [(90, 100), (100, 150)]
    assert (joined.frames_decoded, joined.seconds, joined.error) == (260, 3.0, "b.mp4: decoding failed")
