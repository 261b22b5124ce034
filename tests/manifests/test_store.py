"""Tests of `manifests/store.py`: where manifests, videos and caches live: a local path, or an
object-store URL (s3://, gs://, ...)."""

from __future__ import annotations

import pandas as pd

from manifests import read_table
from manifests.io import BATCH, tidy_batches, to_arrow, write_batch, write_parquet
from manifests.schema import TABLES
from manifests.store import location
from tests.support.s3_server import make_bucket, sorted_rows


def shot_rows(video: str, shots: int) -> list[dict]:
    return [{"video_id": video, "shot_id": f"{video}_{i:07d}", "shot_index": i, "source_path": f"s3://in/{video}.mp4",
             "start_frame": 10 * i, "end_frame": 10 * i + 10, "num_frames": 10, "start_s": i / 2.4,
             "end_s": (i + 1) / 2.4, "duration_s": 1 / 2.4, "fps": 24.0, "width": 64, "height": 48, "rotation": 0,
             "clip_index": 0, "detector": "adaptive", "status": "ok"} for i in range(shots)]  # fmt: skip


def video_row(video: str) -> dict:
    return {"video_id": video, "source_path": f"s3://in/{video}.mp4", "status": "ok", "fps": 24.0, "num_frames": 40,
            "duration_s": 40 / 24, "width": 64, "height": 48, "num_clips": 1, "num_shots": 4}  # fmt: skip


def commit(manifest, videos: list[str], shots: int = 4) -> None:
    rows = {"shots": [r for v in videos for r in shot_rows(v, shots)], "videos": [video_row(v) for v in videos]}
    write_batch(manifest, rows, videos)


def test_tables_on_s3_follow_the_commit_rule_exactly_as_on_disk(s3_env, tmp_path):
    """Batches, a kill between a batch's parts, a video redone, tidying and compaction: every read
    of the S3 manifest equals the read of the same writes on local disk."""
    from manifests.__main__ import main as manifests_cli

    make_bucket(s3_env, "tables")
    places = [tmp_path / "local", "s3://tables/manifest"]
    for where in places:
        commit(where, ["a", "b"])
        commit(where, ["b", "c"], shots=3)  # b redone: its newer rows win, never duplicated
        # A kill between the shots part and the videos part of a batch: those rows never count.
        write_parquet(location(where) / "shots.parquet" / f"{BATCH}99999999999999999999-dead.parquet",
                      to_arrow(shot_rows("d", 2), TABLES["shots"]))  # fmt: skip
    local, remote = (read_table(p, "shots") for p in places)
    assert len(remote) == 4 + 3 + 3 and set(remote["video_id"]) == {"a", "b", "c"}
    pd.testing.assert_frame_equal(sorted_rows(remote), sorted_rows(local))
    every = [read_table(p, "shots", committed_only=False) for p in places]
    pd.testing.assert_frame_equal(sorted_rows(every[1]), sorted_rows(every[0]))
    for where in places:
        tidy_batches(where)  # the dead batch part goes; b's older rows leave the first batch
    remote_files = sorted(p.name for p in location(places[1]).joinpath("shots.parquet").glob("part-*.parquet"))
    local_files = sorted(p.name for p in (places[0] / "shots.parquet").glob("part-*.parquet"))
    assert len(remote_files) == len(local_files) == 2
    assert manifests_cli(["compact", places[1]]) == 0 and manifests_cli(["compact", str(places[0])]) == 0
    assert [p.name.startswith("part-compact-") for p in location(places[1]).joinpath("shots.parquet").iterdir()] == [
        True
    ]
    pd.testing.assert_frame_equal(sorted_rows(read_table(places[1], "shots")), sorted_rows(local))
    assert manifests_cli(["compact", places[1]]) == 0  # idempotent
    assert manifests_cli(["inspect", places[1]]) == 0
    assert not location(places[1]).joinpath(".lock").exists()  # the compaction's lease is gone
