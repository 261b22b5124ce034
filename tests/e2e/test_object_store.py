"""End to end on S3 (a local endpoint): the job killed and resumed with input and output in a bucket,
inspect and compact there, training and precompute reading it."""

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
from manifests.io import BATCH
from manifests.store import ObjectPath
from tests.support import REPO
from tests.support.s3_server import SECRET_KEY, client, make_bucket, sorted_rows, upload


def curation_command(*extra: str) -> list[str]:
    return [sys.executable, "curation/run.py", "--input", "s3://job/in/", "--output", "s3://job/out",
            "--within", "video", "--min-relevance", "-10", "--min-shot-frames", "25", *extra]  # fmt: skip


def committed_batches(env: dict) -> list[str]:
    listed = client(env).list_objects_v2(Bucket="job", Prefix="out/videos.parquet/")
    return [o["Key"] for o in listed.get("Contents", []) if BATCH in o["Key"]]


def train_from_s3(manifest: str, tmp_path: Path) -> None:
    """The tiny pretrain chain on the S3 manifest and S3 videos (data-loader workers read them too),
    then precomputed latents written to and trained from S3."""
    import numpy as np

    from model.tiny import build_tiny_model
    from training.config import load_config
    from training.latent_store import LatentStore
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
