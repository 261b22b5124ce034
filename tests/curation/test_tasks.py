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
