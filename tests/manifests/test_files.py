"""Tests of `manifests/files.py`: atomic writes leave the old file or the new one, never a part, and
ids and paths read from a table never reach outside their folder."""

from __future__ import annotations

import pytest

from manifests.files import file_name, inside, write_atomic, write_json_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "run.json"
    write_json_atomic(target, {"a": 1})

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, broken)
    assert target.read_text().strip().startswith("{") and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_hostile_ids_and_paths_stay_inside(tmp_path):
    assert file_name("v1_0000010") == "v1_0000010"
    assert file_name("../../outside").startswith("id-") and "/" not in file_name("a/b")
    (tmp_path / "keyframes").mkdir()
    assert inside(tmp_path, "keyframes/a.jpg") == (tmp_path / "keyframes" / "a.jpg").resolve()
    assert inside(tmp_path, "../elsewhere.jpg") is None
