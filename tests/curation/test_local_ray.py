"""Tests of `curation/local_ray.py`: starting the job's Ray, and clearing what a killed earlier run
of it left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from manifests import read_table
from tests.conftest import CLIP_MINUTES
from tests.support import REPO


def limited(gib: float):
    import resource

    def apply():
        size = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_after_a_killed_driver_the_next_run_leaves_none_of_its_ray_processes(tmp_path, multi_shot_video):

    from curation.local_ray import RECORD, _start_time

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(out),
               "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / RECORD).exists():
        assert driver.poll() is None and time.time() < deadline, "the job ended before Ray was up"
        time.sleep(0.1)
    time.sleep(1.0)
    recorded = json.loads((out / RECORD).read_text())
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2.0)
    survivors = [e["pid"] for e in recorded if _start_time(e["pid"]) == e["start"]]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    still = [p for p in survivors if _start_time(p) is not None]  # some exit late on their own
    if survivors:  # Ray's agents outlived the killed driver: the next run stopped those still there
        assert "Ray processes left behind by an earlier run" in done.stdout or not still
    assert not [p for p in survivors if _start_time(p) is not None]
    assert not (out / RECORD).exists()  # a clean end leaves no record


@pytest.mark.slow
@pytest.mark.parametrize("gib", [1.0, 3.5])
def test_under_ulimit_v_the_job_says_what_to_raise_or_sizes_its_object_store(tmp_path, multi_shot_video, gib):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(tmp_path / "o"),
               "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    began = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=limited(gib))  # fmt: skip
    if gib < 2:
        assert done.returncode == 2 and "address-space limit (ulimit -v) is 1.00 GiB" in done.stderr
        assert "Traceback" not in done.stderr and time.time() - began < 30  # said at once, no startup timeout
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(read_table(tmp_path / "o", "shots")) == len(multi_shot_video.cuts) + 1


@pytest.mark.slow
def test_a_local_run_prints_one_calm_line_about_rays_token(tmp_path, multi_shot_video):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    done = subprocess.run([sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output",
                           str(tmp_path / "o"), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Token authentication is enabled" not in done.stdout + done.stderr
    assert "local Ray started for this job" in done.stdout
