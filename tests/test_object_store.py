"""Manifests, curation and training on an object store: a real S3 endpoint on 127.0.0.1.

The code is pointed at the server only the standard way (AWS_ENDPOINT_URL, credentials in the
environment); the local filesystem is the oracle the store's results are compared with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from curation.samples import write_synthetic_video
from manifests import read_table
from manifests.io import BATCH, tidy_batches, to_arrow, write_batch, write_parquet
from manifests.schema import TABLES
from manifests.store import ObjectPath, location
from tests.s3_server import SECRET_KEY, client, make_bucket, s3_server, upload

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def s3():
    with s3_server() as env:
        yield env


@pytest.fixture()
def s3_env(s3, monkeypatch):
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    return s3


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


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["video_id", "shot_id"]).reset_index(drop=True)


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


def test_the_output_lease_refuses_a_second_writer_and_expires_when_its_holder_dies(s3_env, monkeypatch):
    from manifests.lock import OutputLock, OutputLocked

    make_bucket(s3_env, "leases")
    monkeypatch.setenv("MASK2DIT_LEASE_S", "2")
    with OutputLock("s3://leases/out", "curation job"):
        with pytest.raises(OutputLocked, match=r"s3://leases/out is in use by another curation job .*expires"):
            OutputLock("s3://leases/out", "compaction").acquire()
        time.sleep(3)  # longer than the lease: the holder renews it, so it still holds
        with pytest.raises(OutputLocked):
            OutputLock("s3://leases/out").acquire()
    with OutputLock("s3://leases/out"):  # released: free at once
        pass
    # A holder killed without releasing leaves its lease, which expires by itself.
    lock = ObjectPath("s3://leases/out/.lock")
    lock.write_bytes(json.dumps({"what": "curation job", "host": "gone", "pid": 1, "token": "dead",
                                 "expires": time.time() + 1}).encode())  # fmt: skip
    with pytest.raises(OutputLocked, match="host gone, pid 1"):
        OutputLock("s3://leases/out").acquire()
    time.sleep(1.5)
    with OutputLock("s3://leases/out"):
        pass


def test_a_store_that_cannot_be_reached_is_said_at_the_door(s3, tmp_path, capsys, monkeypatch):
    from curation.run import main

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["AWS_ENDPOINT_URL"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, s3[key])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(["--input", str(tmp_path), "--output", "s3://no-such-bucket/out"]) == 2
    assert "bucket s3://no-such-bucket does not exist" in capsys.readouterr().err


def curation_command(*extra: str) -> list[str]:
    return [sys.executable, "curation/run.py", "--input", "s3://job/in/", "--output", "s3://job/out",
            "--within", "video", "--min-relevance", "-10", "--min-shot-frames", "25", *extra]  # fmt: skip


def committed_batches(env: dict) -> list[str]:
    listed = client(env).list_objects_v2(Bucket="job", Prefix="out/videos.parquet/")
    return [o["Key"] for o in listed.get("Contents", []) if BATCH in o["Key"]]


@pytest.mark.slow
def test_curation_on_s3_end_to_end_a_kill_and_a_resume_then_training_reads_it(s3, tmp_path, monkeypatch, capsys):
    """Inputs from a prefix, output to a bucket: a run killed after its first commit, the re-run
    resumes it; inspect and compact; then a tiny pretrain run and precomputed latents from S3."""
    from manifests.__main__ import main as manifests_cli

    make_bucket(s3, "job")
    lengths = {f"v{i}": [60, 72, 66] for i in range(4)}
    for i, name in enumerate(lengths):
        video = write_synthetic_video(tmp_path / "videos" / f"{name}.mp4", lengths[name], fps=24.0, size=(64, 48),
                                      seed=30 + i)  # fmt: skip
        upload(s3, video.path, f"s3://job/in/{name}.mp4")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | s3 | {"MASK2DIT_LEASE_S": "3"}
    driver = subprocess.Popen(curation_command("--commit-videos", "1"), cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.time() + 240
    while not committed_batches(s3):
        assert driver.poll() is None, f"the job ended before its first commit: {driver.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no commit on S3 within 4 minutes"
        time.sleep(0.1)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first_output = driver.stdout.read()
    time.sleep(4)  # the killed run's lease expires
    done = subprocess.run(curation_command(), cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASK2DIT_CACHE", str(tmp_path / "cache"))
    out = "s3://job/out"
    record = json.loads(ObjectPath(f"{out}/run.json").read_text())
    assert record["this_run"]["videos_skipped_already_done"] >= 1  # resumed, not redone
    assert record["this_run"]["videos_ok"] + record["this_run"]["videos_skipped_already_done"] == 4
    for text in (first_output, done.stdout, done.stderr, json.dumps(record)):
        assert SECRET_KEY not in text  # credentials are never printed or written
    videos, shots = read_table(out, "videos"), read_table(out, "shots")
    assert set(videos["status"]) == {"ok"} and videos["source_path"].str.startswith("s3://job/in/").all()
    assert shots["shot_id"].is_unique and len(shots) == 4 * 3
    for name, part in shots.groupby(shots["source_path"].str.extract(r"(v\d)\.mp4$")[0]):
        assert sorted(part["start_frame"]) == [0, 60, 132], name  # the cuts of the generated videos
    assert all(ObjectPath(f"{out}/{p}").is_file() for p in shots["keyframe_path"])
    assert len(read_table(out, "combinations")) >= 1
    before = sorted_rows(shots)
    assert manifests_cli(["inspect", out]) == 0 and "videos" in capsys.readouterr().out
    assert manifests_cli(["compact", out]) == 0 and "shots:" in capsys.readouterr().out
    pd.testing.assert_frame_equal(sorted_rows(read_table(out, "shots")), before)
    train_from_s3(out, tmp_path)


def train_from_s3(manifest: str, tmp_path: Path) -> None:
    """The tiny pretrain chain on the S3 manifest and S3 videos (data-loader workers read them too),
    then precomputed latents written to and trained from S3."""
    import numpy as np

    from model.tiny import build_tiny_model
    from training.config import load_config
    from training.encoding import LatentStore
    from training.precompute import precompute
    from training.train import train

    model = build_tiny_model(tmp_path / "tiny")
    tiny = REPO / "training" / "configs" / "tiny.yaml"

    def config(output, *overrides):
        return load_config(tiny, [f"data.manifest={manifest}", f"model.path={model}", f"run.output={output}",
                                  "run.max_steps=2", "run.save_every=2", *overrides])  # fmt: skip

    history = train(config(tmp_path / "run", "data.num_workers=1"))["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
    middle = ["data.frame_window=middle", "data.scene_frames=from_shots", "data.num_frames=17"]
    store = "s3://job/latents"
    assert precompute(config(tmp_path / "p", *middle), store)["written"] > 0
    assert LatentStore(store).identity and ObjectPath(store).glob("shard-*.safetensors")
    history = train(config(tmp_path / "r", *middle, f"data.precomputed={store}"))["history"]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


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


def test_the_importer_reads_its_source_and_clips_from_s3_and_writes_an_s3_manifest(s3_env, tmp_path):
    from manifests.importer import import_dataset

    make_bucket(s3_env, "imports")
    for i in range(2):
        clip = write_synthetic_video(tmp_path / f"clip{i}.mp4", [30], fps=24.0, size=(64, 48), seed=40 + i)
        upload(s3_env, clip.path, f"s3://imports/data/clips/clip{i}.mp4")
    ObjectPath("s3://imports/data/train.csv").write_text("path,caption\nclips/clip0.mp4,a man walks\n"
                                                         "clips/clip1.mp4,a dog runs\nclips/gone.mp4,missing\n")  # fmt: skip
    result = import_dataset("s3://imports/data/train.csv", "s3://imports/manifest")
    assert result.shots == 2 and len(result.failures) == 1 and "file not found" in result.failures[0]["error"]
    shots = read_table("s3://imports/manifest", "shots")
    assert sorted(shots["source_path"]) == ["s3://imports/data/clips/clip0.mp4", "s3://imports/data/clips/clip1.mp4"]
    assert set(read_table("s3://imports/manifest", "shot_captions")["caption"]) == {"a man walks", "a dog runs"}
    assert ObjectPath("s3://imports/manifest/import.json").is_file()
