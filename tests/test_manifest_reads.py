"""Validated reads of many part files: the fast path (parallel footers, one dataset read per file
schema, row rules once) gives what the file-by-file path gives, in file order, and its errors still
name the file, row and column."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from manifests import ManifestError, read_table
from manifests.io import _read_each, _read_files, table_path, write_part


def shot(video_id: str, s: int) -> dict:
    return {"video_id": video_id, "shot_id": f"{video_id}_{s * 50:07d}", "shot_index": s,
            "source_path": f"/data/{video_id}.mp4", "start_frame": s * 50, "end_frame": s * 50 + 50, "num_frames": 50,
            "start_s": s * 2.0, "end_s": s * 2.0 + 2.0, "duration_s": 2.0, "start_pts": s * 50, "end_pts": s * 50 + 50,
            "time_base": "1/25", "fps": 25.0, "width": 320, "height": 240, "rotation": 0, "clip_index": 0,
            "detector": "adaptive(threshold=3,min_scene_frames=15)", "status": "ok"}  # fmt: skip


@pytest.fixture
def manifest(tmp_path):
    for v in range(30):
        video_id = f"v{v:03d}"
        write_part(tmp_path, "shots", video_id, [shot(video_id, s) for s in range(v % 4 + 1)])
        write_part(tmp_path, "videos", video_id, [{"video_id": video_id, "source_path": f"/data/{video_id}.mp4",
                                                   "status": "ok"}])  # fmt: skip
    folder = table_path(tmp_path, "shots")
    # A part rewritten by a plain pandas round trip (large_string, ints as written by pandas) and an
    # older one without a nullable column: three file schemas in one table.
    frame = pd.read_parquet(folder / "part-v007.parquet")
    frame.to_parquet(folder / "part-v007.parquet", index=False)
    older = pq.read_table(folder / "part-v011.parquet").drop_columns(["detector"])
    pq.write_table(older, folder / "part-v011.parquet")
    return tmp_path


def test_the_fast_read_equals_the_file_by_file_read_in_file_order(manifest):
    from manifests.schema import TABLES

    files = sorted(table_path(manifest, "shots").glob("part-*.parquet"))
    fast, slow = _read_files(files, TABLES["shots"]), _read_each(files, TABLES["shots"])
    assert fast.schema.equals(slow.schema) and fast.equals(slow)
    shots = read_table(manifest, "shots")
    assert shots["shot_id"].tolist() == slow.column("shot_id").to_pylist()
    assert shots.loc[shots["video_id"] == "v011", "detector"].isna().all()
    assert len(shots) == sum(v % 4 + 1 for v in range(30))
    only = _read_files(files, TABLES["shots"], columns=["video_id", "num_frames"])
    assert only.column_names == ["video_id", "num_frames"] and len(only) == len(slow)


def test_a_bad_row_among_many_files_is_named_by_its_file_row_and_column(manifest):
    folder = table_path(manifest, "shots")
    frame = pd.read_parquet(folder / "part-v023.parquet")
    frame.loc[1, "end_frame"] = frame.loc[1, "start_frame"]
    frame.loc[1, "num_frames"] = 0
    frame.to_parquet(folder / "part-v023.parquet", index=False)
    with pytest.raises(ManifestError, match=r"part-v023\.parquet: table 'shots' row 1 \(shot_id v023_0000050\)"):
        read_table(manifest, "shots")
    (folder / "part-v005.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match=r"part-v005\.parquet is not a readable Parquet file"):
        read_table(manifest, "shots")


def test_only_committed_videos_are_read_and_only_their_ids_are_read_for_it(manifest, monkeypatch):
    (table_path(manifest, "videos") / "part-v004.parquet").unlink()  # v004 stopped before its commit
    seen = []
    original = _read_files

    def spy(files, expected, columns=None, known=None):
        seen.append((expected.metadata[b"table"].decode(), columns))
        return original(files, expected, columns, known)

    monkeypatch.setattr("manifests.io._read_files", spy)
    shots = read_table(manifest, "shots")
    assert "v004" not in set(shots["video_id"]) and shots["video_id"].nunique() == 29
    assert seen == [("shots", None), ("videos", ["video_id"])]


# -- compaction -------------------------------------------------------------------------------------


def compact_cli(folder) -> int:
    from manifests.__main__ import main

    return main(["compact", str(folder)])


def test_compaction_keeps_every_read_and_is_idempotent(manifest, capsys):
    before = {name: read_table(manifest, name, committed_only=False) for name in ("shots", "videos")}
    (table_path(manifest, "videos") / "part-v004.parquet").unlink()  # an uncommitted video stays uncommitted
    committed = read_table(manifest, "shots")
    assert compact_cli(manifest) == 0 and "shots: 30 files -> 1" in capsys.readouterr().out
    assert [f.name[:13] for f in table_path(manifest, "shots").iterdir()] == ["part-compact-"]
    key = ["video_id", "shot_id"]
    after = read_table(manifest, "shots", committed_only=False).sort_values(key, ignore_index=True)
    assert after.equals(before["shots"].sort_values(key, ignore_index=True))
    assert (
        read_table(manifest, "shots")
        .sort_values(key, ignore_index=True)
        .equals(committed.sort_values(key, ignore_index=True))
    )
    assert len(read_table(manifest, "videos")) == 29
    assert len(pd.read_parquet(manifest / "shots.parquet")) == len(before["shots"])  # the plain one-liner too
    files = sorted(table_path(manifest, "shots").iterdir())
    assert compact_cli(manifest) == 0 and sorted(table_path(manifest, "shots").iterdir()) == files  # idempotent


def test_after_compaction_a_redone_or_removed_video_wins_over_its_compacted_rows(manifest):
    from curation.config import CurationConfig
    from curation.probe import completed_video_ids
    from manifests.io import read_part, remove_part

    assert compact_cli(manifest) == 0
    write_part(manifest, "shots", "v002", [shot("v002", s) for s in range(7)])  # redone: 7 shots now
    remove_part(manifest, "shots", "v003")  # failed on a re-run: its shots go
    shots = read_table(manifest, "shots", committed_only=False)
    assert (shots["video_id"] == "v002").sum() == 7 and "v003" not in set(shots["video_id"])
    assert len(read_part(manifest, "shots", "v005")) == 2  # read from the compacted file
    assert len(read_part(manifest, "shots", "v002")) == 7
    # Resume planning still sees compacted videos as done (their parts are gone, their rows are not).
    write_part(manifest, "clips", "v001", [{"clip_id": "v001_c000", "video_id": "v001", "clip_index": 0,
                                            "start_frame": 0, "end_frame": 100, "status": "ok"}])  # fmt: skip
    assert compact_cli(manifest) == 0
    assert "v001" in completed_video_ids(CurationConfig(output=manifest))
    assert (read_table(manifest, "shots")["video_id"] == "v002").sum() == 7


def test_a_reader_between_the_compacted_write_and_the_deletes_sees_every_row_once(manifest, monkeypatch):
    """A compaction stopped (or paused) right after its rename: the old parts are still there, and
    a reader skips the ones the compacted file replaces; the next compaction deletes them."""
    from pathlib import Path

    before = read_table(manifest, "shots", committed_only=False)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the deletes never happen
    assert compact_cli(manifest) == 0
    monkeypatch.undo()
    folder = table_path(manifest, "shots")
    assert len(list(folder.glob("part-*.parquet"))) == 31
    assert len(read_table(manifest, "shots", committed_only=False)) == len(before)
    assert compact_cli(manifest) == 0 and len(list(folder.glob("part-*.parquet"))) == 1
    assert len(read_table(manifest, "shots", committed_only=False)) == len(before)


# -- batched commits --------------------------------------------------------------------------------


def video_rows(video_id: str, shots: int) -> dict:
    return {"shots": [shot(video_id, s) for s in range(shots)],
            "videos": [{"video_id": video_id, "source_path": f"/data/{video_id}.mp4", "status": "ok"}]}  # fmt: skip


def test_a_batch_commits_many_videos_with_one_part_per_table_and_a_kill_loses_only_the_batch(tmp_path):
    from curation.config import CurationConfig
    from curation.probe import completed_video_ids
    from curation.reconcile import CommitBatch
    from manifests.io import tidy_batches

    batch = CommitBatch(tmp_path, videos=3, seconds=3600)
    for v in range(5):
        rows = video_rows(f"b{v}", 2)
        rows["clips"] = [{"clip_id": f"b{v}_c000", "video_id": f"b{v}", "clip_index": 0, "start_frame": 0,
                          "end_frame": 100, "status": "ok"}]  # fmt: skip
        batch.add(f"b{v}", rows)
    assert batch.batches == 1  # b0-b2 committed; b3, b4 wait in memory: a kill now loses only them
    assert [len(list(table_path(tmp_path, t).glob("part-batch-*"))) for t in ("shots", "clips", "videos")] == [1, 1, 1]
    assert sorted(read_table(tmp_path, "videos")["video_id"]) == ["b0", "b1", "b2"]
    assert completed_video_ids(CurationConfig(output=tmp_path)) == {"b0", "b1", "b2"}
    # A kill between a batch's shots part and its videos part: those rows are never read, and the
    # next run deletes them before it starts.
    from manifests.io import write_batch

    write_batch(tmp_path, {"shots": video_rows("b3", 4)["shots"]}, ["b3"])
    assert "b3" not in set(read_table(tmp_path, "shots", committed_only=False)["video_id"])
    assert tidy_batches(tmp_path) == 1 and len(pd.read_parquet(tmp_path / "shots.parquet")) == 6


def test_a_video_committed_again_replaces_its_rows_never_duplicates_them(manifest):
    """The newest commit wins, per video: over its own legacy part (deleted when a batch commits it),
    over an older batch, and over compacted rows; a plain pandas read agrees once the job tidies."""
    from manifests.io import tidy_batches, write_batch

    legacy = read_table(manifest, "shots")
    first = video_rows("v001", 3) | {"clips": []}
    write_batch(manifest, first, ["v001"])  # v001 had a per-video part: the batch replaces it
    assert not (table_path(manifest, "shots") / "part-v001.parquet").exists()
    five, one = video_rows("v001", 5), video_rows("v009", 1)
    write_batch(manifest, {name: five[name] + one[name] for name in five}, ["v001", "v009"])
    shots = read_table(manifest, "shots")
    assert (shots["video_id"] == "v001").sum() == 5 and (shots["video_id"] == "v009").sum() == 1
    assert len(shots) == len(legacy) - 2 - 2 + 5 + 1  # v001 had 2 shots, v009 had 2
    assert shots["shot_id"].is_unique and read_table(manifest, "videos")["video_id"].is_unique
    assert tidy_batches(manifest) >= 1
    assert len(pd.read_parquet(manifest / "shots.parquet")) == len(shots)
    assert compact_cli(manifest) == 0
    write_batch(manifest, {"shots": [], "videos": video_rows("v001", 0)["videos"]}, ["v001"])  # failed now: no shots
    after = read_table(manifest, "shots")
    assert "v001" not in set(after["video_id"]) and len(after) == len(shots) - 5


def test_a_read_of_some_columns_is_validated_and_filtered_like_a_full_one(manifest):
    (table_path(manifest, "videos") / "part-v004.parquet").unlink()
    full = read_table(manifest, "shots")
    some = read_table(manifest, "shots", columns=["shot_id", "num_frames"])
    assert list(some.columns) == ["shot_id", "num_frames"] and some["shot_id"].tolist() == full["shot_id"].tolist()
    assert list(read_table(manifest, "clips", missing_ok=True, columns=["clip_id"]).columns) == ["clip_id"]
    with pytest.raises(ManifestError, match="no column 'nope'"):
        read_table(manifest, "shots", columns=["nope"])
