"""Tests of `manifests/io.py`: atomic writing and validated reading of manifest tables (a Parquet
file or a folder of parts)."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests import ManifestError, read_table, write_part
from manifests.io import read_each_file, read_files, table_path
from tests.support.jobs import damaged_copy, set_value
from tests.support.manifests import compact_cli, shot
from tests.support.training import CONFIG


def video_rows(video_id: str, shots: int) -> dict:
    return {"shots": [shot(video_id, s) for s in range(shots)],
            "videos": [{"video_id": video_id, "source_path": f"/data/{video_id}.mp4", "status": "ok"}]}  # fmt: skip


def test_wrong_schema_is_a_clear_error_naming_the_file(tmp_path):
    folder = tmp_path / "shots.parquet"
    folder.mkdir()
    pq.write_table(pa.table({"video_id": ["a"], "start_frame": ["not a number"]}), folder / "part-x.parquet")
    with pytest.raises(ManifestError, match=r"part-x\.parquet.*missing column 'shot_id'"):
        read_table(tmp_path, "shots")
    with pytest.raises(ManifestError, match="does not exist"):
        read_table(tmp_path, "videos")


def test_a_plain_pandas_round_trip_reads_back_the_same_rows(manifest, tmp_path):  # noqa: F811
    from manifests.schema import TABLES

    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    for part in glob.glob(str(copy / "*.parquet" / "part-*.parquet")):
        pd.read_parquet(part).to_parquet(part)  # no edit: what a user who inspects and saves does
    for name in TABLES:
        before, after = read_table(manifest, name), read_table(copy, name)
        pd.testing.assert_frame_equal(after, before, check_dtype=True)


def test_a_nan_in_a_non_nullable_column_is_named(manifest, tmp_path):  # noqa: F811
    broken = damaged_copy(manifest, tmp_path, "shots", set_value("shot_index", float("nan")))
    with pytest.raises(ManifestError, match=r"row 0 \(shot_id .*\) column 'shot_index' is null"):
        read_table(broken, "shots")


def test_a_damaged_data_page_is_a_clear_error_in_reading_training_and_inspect(manifest, tmp_path, capsys):  # noqa: F811
    from manifests.__main__ import main as manifests_main
    from training.train import main as train_main

    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    part = Path(sorted(glob.glob(str(copy / "shots.parquet" / "part-*.parquet")))[0])
    data = bytearray(part.read_bytes())
    for offset in range(200, min(len(data) - 200, 1400)):  # the first data pages; the footer stays intact
        data[offset] ^= 0x5A
    part.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="is damaged and cannot be read"):
        read_table(copy, "shots")
    code = train_main(["--config", str(CONFIG), f"data.manifest={copy}", f"run.output={tmp_path / 'run'}",
                       f"model.path={tmp_path / 'model'}", "data.allow_uncaptioned=false"])  # fmt: skip
    assert code == 2 and "is damaged" in capsys.readouterr().err
    assert manifests_main(["inspect", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "is damaged" in captured.err and "Traceback" not in captured.err + captured.out


def test_the_fast_read_equals_the_file_by_file_read_in_file_order(parts_manifest):
    from manifests.schema import TABLES

    files = sorted(table_path(parts_manifest, "shots").glob("part-*.parquet"))
    fast, slow = read_files(files, TABLES["shots"]), read_each_file(files, TABLES["shots"])
    assert fast.schema.equals(slow.schema) and fast.equals(slow)
    shots = read_table(parts_manifest, "shots")
    assert shots["shot_id"].tolist() == slow.column("shot_id").to_pylist()
    assert shots.loc[shots["video_id"] == "v011", "detector"].isna().all()
    assert len(shots) == sum(v % 4 + 1 for v in range(30))
    only = read_files(files, TABLES["shots"], columns=["video_id", "num_frames"])
    assert only.column_names == ["video_id", "num_frames"] and len(only) == len(slow)


def test_a_bad_row_among_many_files_is_named_by_its_file_row_and_column(parts_manifest):
    folder = table_path(parts_manifest, "shots")
    frame = pd.read_parquet(folder / "part-v023.parquet")
    frame.loc[1, "end_frame"] = frame.loc[1, "start_frame"]
    frame.loc[1, "num_frames"] = 0
    frame.to_parquet(folder / "part-v023.parquet", index=False)
    with pytest.raises(ManifestError, match=r"part-v023\.parquet: table 'shots' row 1 \(shot_id v023_0000050\)"):
        read_table(parts_manifest, "shots")
    (folder / "part-v005.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match=r"part-v005\.parquet is not a readable Parquet file"):
        read_table(parts_manifest, "shots")


def test_only_committed_videos_are_read_and_only_their_ids_are_read_for_it(parts_manifest, monkeypatch):
    (table_path(parts_manifest, "videos") / "part-v004.parquet").unlink()  # v004 stopped before its commit
    seen = []
    original = read_files

    def spy(files, expected, columns=None, known=None):
        seen.append((expected.metadata[b"table"].decode(), columns))
        return original(files, expected, columns, known)

    monkeypatch.setattr("manifests.io.read_files", spy)
    shots = read_table(parts_manifest, "shots")
    assert "v004" not in set(shots["video_id"]) and shots["video_id"].nunique() == 29
    assert seen == [("shots", None), ("videos", ["video_id"])]


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


def test_a_video_committed_again_replaces_its_rows_never_duplicates_them(parts_manifest):
    """The newest commit wins, per video: over its own legacy part (deleted when a batch commits it),
    over an older batch, and over compacted rows; a plain pandas read agrees once the job tidies."""
    from manifests.io import tidy_batches, write_batch

    legacy = read_table(parts_manifest, "shots")
    first = video_rows("v001", 3) | {"clips": []}
    write_batch(parts_manifest, first, ["v001"])  # v001 had a per-video part: the batch replaces it
    assert not (table_path(parts_manifest, "shots") / "part-v001.parquet").exists()
    five, one = video_rows("v001", 5), video_rows("v009", 1)
    write_batch(parts_manifest, {name: five[name] + one[name] for name in five}, ["v001", "v009"])
    shots = read_table(parts_manifest, "shots")
    assert (shots["video_id"] == "v001").sum() == 5 and (shots["video_id"] == "v009").sum() == 1
    assert len(shots) == len(legacy) - 2 - 2 + 5 + 1  # v001 had 2 shots, v009 had 2
    assert shots["shot_id"].is_unique and read_table(parts_manifest, "videos")["video_id"].is_unique
    assert tidy_batches(parts_manifest) >= 1
    assert len(pd.read_parquet(parts_manifest / "shots.parquet")) == len(shots)
    assert compact_cli(parts_manifest) == 0
    write_batch(
        parts_manifest, {"shots": [], "videos": video_rows("v001", 0)["videos"]}, ["v001"]
    )  # failed now: no shots
    after = read_table(parts_manifest, "shots")
    assert "v001" not in set(after["video_id"]) and len(after) == len(shots) - 5


def test_a_read_of_some_columns_is_validated_and_filtered_like_a_full_one(parts_manifest):
    (table_path(parts_manifest, "videos") / "part-v004.parquet").unlink()
    full = read_table(parts_manifest, "shots")
    some = read_table(parts_manifest, "shots", columns=["shot_id", "num_frames"])
    assert list(some.columns) == ["shot_id", "num_frames"] and some["shot_id"].tolist() == full["shot_id"].tolist()
    assert list(read_table(parts_manifest, "clips", missing_ok=True, columns=["clip_id"]).columns) == ["clip_id"]
    with pytest.raises(ManifestError, match="no column 'nope'"):
        read_table(parts_manifest, "shots", columns=["nope"])


def test_readers_see_only_committed_videos(tmp_path):
    shot = {"shot_index": 0, "source_path": "x", "start_frame": 0, "end_frame": 10, "num_frames": 10, "start_s": 0.0,
            "end_s": 1.0, "duration_s": 1.0, "fps": 10.0, "width": 8, "height": 8, "status": "ok"}  # fmt: skip
    write_part(tmp_path, "shots", "v1", [shot | {"video_id": "v1", "shot_id": "v1_0"}])
    write_part(tmp_path, "shots", "v2", [shot | {"video_id": "v2", "shot_id": "v2_0"}])
    write_part(tmp_path, "videos", "v1", [{"video_id": "v1", "source_path": "x", "status": "ok"}])
    assert read_table(tmp_path, "shots")["video_id"].tolist() == ["v1"]  # v2's commit never happened
    assert sorted(read_table(tmp_path, "shots", committed_only=False)["video_id"]) == ["v1", "v2"]


def test_integer_columns_stay_integers_when_a_failed_row_has_nulls(tmp_path):
    from manifests.probe import failed_video
    from manifests.schema import VideoRecord

    ok = VideoRecord(video_id="a", source_path="/a.mp4", status="ok", width=320, height=240, num_frames=100)
    write_part(tmp_path, "videos", "a", [ok])
    write_part(tmp_path, "videos", "b", [failed_video("/b.mp4", "/b.mp4: file not found", "probe")])
    videos = read_table(tmp_path, "videos").set_index("video_id")
    assert str(videos["width"].dtype) == "Int32" and str(videos["num_frames"].dtype) == "Int64"
    assert f"{videos.loc['a', 'width']}x{videos.loc['a', 'height']}" == "320x240"
    assert videos["width"].isna().sum() == 1
    full = read_table(tmp_path, "videos", columns=["video_id", "size_bytes"])
    assert str(full["size_bytes"].dtype) == "Int64"  # all null: still an integer column


def test_every_written_column_carries_its_description_as_field_metadata(tmp_path):
    import pyarrow.parquet as pq

    from tests.support.manifests import shot

    write_part(tmp_path, "shots", "v", [shot("v", 0)])
    schema = pq.read_schema(next((tmp_path / "shots.parquet").glob("*.parquet")))
    assert b"half-open" in schema.field("end_frame").metadata[b"description"]
    assert all(f.metadata and f.metadata.get(b"description") for f in schema)


def test_a_shot_row_carrying_another_shots_timestamps_is_refused_on_read(tmp_path):
    from tests.support.manifests import shot

    rows = [shot("v", s) for s in range(4)]
    rows[2]["start_pts"], rows[2]["end_pts"] = rows[3]["start_pts"], rows[3]["end_pts"]  # shot 3's frames
    write_part(tmp_path, "shots", "v", rows)
    with pytest.raises(ManifestError, match="column 'start_pts'.*belong to another shot"):
        read_table(tmp_path, "shots")
