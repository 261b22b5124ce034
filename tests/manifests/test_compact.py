"""Tests of `manifests/compact.py`: `python -m manifests compact DIR`: merge a manifest's many small
part files into a few large ones."""

from __future__ import annotations

import pandas as pd

from manifests import read_table
from manifests.io import table_path, write_part
from tests.support.manifests import compact_cli, shot


def test_compaction_keeps_every_read_and_is_idempotent(parts_manifest, capsys):
    before = {name: read_table(parts_manifest, name, committed_only=False) for name in ("shots", "videos")}
    (table_path(parts_manifest, "videos") / "part-v004.parquet").unlink()  # an uncommitted video stays uncommitted
    committed = read_table(parts_manifest, "shots")
    assert compact_cli(parts_manifest) == 0 and "shots: 30 files -> 1" in capsys.readouterr().out
    assert [f.name[:13] for f in table_path(parts_manifest, "shots").iterdir()] == ["part-compact-"]
    key = ["video_id", "shot_id"]
    after = read_table(parts_manifest, "shots", committed_only=False).sort_values(key, ignore_index=True)
    assert after.equals(before["shots"].sort_values(key, ignore_index=True))
    assert (
        read_table(parts_manifest, "shots")
        .sort_values(key, ignore_index=True)
        .equals(committed.sort_values(key, ignore_index=True))
    )
    assert len(read_table(parts_manifest, "videos")) == 29
    assert len(pd.read_parquet(parts_manifest / "shots.parquet")) == len(before["shots"])  # the plain one-liner too
    files = sorted(table_path(parts_manifest, "shots").iterdir())
    assert (
        compact_cli(parts_manifest) == 0 and sorted(table_path(parts_manifest, "shots").iterdir()) == files
    )  # idempotent


def test_after_compaction_a_redone_or_removed_video_wins_over_its_compacted_rows(parts_manifest):
    from curation.config import CurationConfig
    from curation.probe import completed_video_ids
    from manifests.io import read_part, remove_part

    assert compact_cli(parts_manifest) == 0
    write_part(parts_manifest, "shots", "v002", [shot("v002", s) for s in range(7)])  # redone: 7 shots now
    remove_part(parts_manifest, "shots", "v003")  # failed on a re-run: its shots go
    shots = read_table(parts_manifest, "shots", committed_only=False)
    assert (shots["video_id"] == "v002").sum() == 7 and "v003" not in set(shots["video_id"])
    assert len(read_part(parts_manifest, "shots", "v005")) == 2  # read from the compacted file
    assert len(read_part(parts_manifest, "shots", "v002")) == 7
    # Resume planning still sees compacted videos as done (their parts are gone, their rows are not).
    write_part(parts_manifest, "clips", "v001", [{"clip_id": "v001_c000", "video_id": "v001", "clip_index": 0,
                                            "start_frame": 0, "end_frame": 100, "status": "ok"}])  # fmt: skip
    assert compact_cli(parts_manifest) == 0
    assert "v001" in completed_video_ids(CurationConfig(output=parts_manifest))
    assert (read_table(parts_manifest, "shots")["video_id"] == "v002").sum() == 7


def test_a_reader_between_the_compacted_write_and_the_deletes_sees_every_row_once(parts_manifest, monkeypatch):
    """A compaction stopped (or paused) right after its rename: the old parts are still there, and
    a reader skips the ones the compacted file replaces; the next compaction deletes them."""
    from pathlib import Path

    before = read_table(parts_manifest, "shots", committed_only=False)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # the deletes never happen
    assert compact_cli(parts_manifest) == 0
    monkeypatch.undo()
    folder = table_path(parts_manifest, "shots")
    assert len(list(folder.glob("part-*.parquet"))) == 31
    assert len(read_table(parts_manifest, "shots", committed_only=False)) == len(before)
    assert compact_cli(parts_manifest) == 0 and len(list(folder.glob("part-*.parquet"))) == 1
    assert len(read_table(parts_manifest, "shots", committed_only=False)) == len(before)


def test_a_reader_looping_while_compaction_replaces_files_never_fails(tmp_path):
    """Readers list the live files and then read them; compaction may replace them in between. The
    read starts again on the new files: every read sees a whole, consistent table."""
    import threading

    from manifests import read_table, write_part
    from manifests.compact import compact
    from tests.support.manifests import shot

    def add(first: int, count: int) -> None:
        for v in range(first, first + count):
            write_part(tmp_path, "shots", f"v{v:03d}", [shot(f"v{v:03d}", s) for s in range(3)])
            write_part(tmp_path, "videos", f"v{v:03d}", [{"video_id": f"v{v:03d}", "source_path": f"/{v}.mp4",
                                                          "status": "ok"}])  # fmt: skip

    add(0, 10)
    done, failures, reads = threading.Event(), [], [0]

    def reader():
        while not done.is_set():
            try:
                shots = read_table(tmp_path, "shots")
                assert len(shots) % 3 == 0 and shots.groupby("video_id").size().eq(3).all()
                reads[0] += 1
            except Exception as err:  # noqa: BLE001 - every failure counts
                failures.append(repr(err))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for round_ in range(1, 8):
            add(10 * round_, 10)
            compact(tmp_path)
    finally:
        done.set()
        thread.join()
    assert not failures, failures[:3]
    assert reads[0] > 0 and len(read_table(tmp_path, "shots")) == 3 * 80


def test_a_batch_cut_short_leaves_no_rows_a_plain_reader_sees(tmp_path, monkeypatch):
    import pandas as pd

    from manifests import io

    real = io.write_parquet

    def killed_at_the_videos_part(path, table, metadata=None, **options):
        if "videos.parquet" in str(path):
            raise KeyboardInterrupt  # the job is killed while writing its commit
        return real(path, table, metadata, **options)

    monkeypatch.setattr(io, "write_parquet", killed_at_the_videos_part)
    from tests.support.manifests import shot

    rows = {"shots": [shot("v", 0)], "videos": [{"video_id": "v", "source_path": "/v.mp4", "status": "ok"}]}
    try:
        io.write_batch(tmp_path, rows, ["v"])
    except KeyboardInterrupt:
        pass
    assert pd.read_parquet(tmp_path / "shots.parquet").empty  # the staged part is hidden from plain readers
    monkeypatch.setattr(io, "write_parquet", real)
    assert io.tidy_batches(tmp_path) >= 1 and not list((tmp_path / "shots.parquet").glob(".pending-*"))
