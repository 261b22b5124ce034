"""Tests of `curation/inputs.py`: resolve --input arguments (video files, folders searched
recursively, text files of paths)."""

from __future__ import annotations

import os

from curation.inputs import resolve_inputs
from manifests.store import ObjectPath, location
from tests.support.s3_server import make_bucket


def test_inputs_on_s3_prefixes_and_list_objects_expand_like_folders_and_lists(s3_env, tmp_path):
    from curation.inputs import resolve_inputs

    make_bucket(s3_env, "inputs")
    for key in ("raw/a.mp4", "raw/deeper/b.MKV", "raw/notes.txt.bak", "other/c.mp4"):
        ObjectPath(f"s3://inputs/{key}").write_bytes(b"x")
    ObjectPath("s3://inputs/lists/list.txt").write_text(f"# clips\n../other/c.mp4\ns3://inputs/raw/a.mp4\n"
                                                        f"{tmp_path / 'local.mp4'}\n\n")  # fmt: skip
    assert resolve_inputs([location("s3://inputs/raw/")]) == ["s3://inputs/raw/a.mp4", "s3://inputs/raw/deeper/b.MKV"]
    assert resolve_inputs([location("s3://inputs/lists/list.txt")]) == [
        "s3://inputs/other/c.mp4", "s3://inputs/raw/a.mp4", str(tmp_path / "local.mp4")]  # fmt: skip


def test_symlink_loops_in_input_folders_are_reported(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.mp4").write_bytes(b"")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")
    problems = []
    assert resolve_inputs([tmp_path], problems) == [str(tmp_path / "a" / "b" / "x.mp4")]
    assert problems == [(str(tmp_path / "a" / "b" / "loop"),
                         f"symbolic link loop: {tmp_path / 'a' / 'b' / 'loop'} leads back to {tmp_path / 'a'}; "
                         "not followed")]  # fmt: skip


def test_object_keys_are_kept_verbatim_not_merged_as_paths(s3_env):
    """On an object store a key is a string: 'in/dir/../plain.mp4' and 'in/a//double.mp4' are objects
    of their own beside 'in/plain.mp4' and 'in/a/double.mp4', each an input of its own."""
    make_bucket(s3_env, "keys")
    keys = ["in/plain.mp4", "in/dir/../plain.mp4", "in/a/double.mp4", "in/a//double.mp4", "in/./dot.mp4",
            "in/dot.mp4"]  # fmt: skip
    for i, key in enumerate(keys):
        ObjectPath(f"s3://keys/{key}").write_bytes(b"x" * (i + 1))
    found = resolve_inputs([location("s3://keys/in")])
    assert sorted(found) == sorted(f"s3://keys/{k}" for k in keys)
    for i, url in enumerate(sorted(found, key=lambda u: keys.index(u.removeprefix("s3://keys/")))):
        assert ObjectPath(url).read_bytes() == b"x" * (i + 1)  # each reads back its own object
    assert str(ObjectPath("s3://keys/lists") / "../in/plain.mp4") == "s3://keys/in/plain.mp4"  # a reference resolves
