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

    from curation.local_ray import RECORD, process_start_time

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
    assert recorded["driver"]["pid"] == driver.pid and recorded["run"]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2.0)
    survivors = [e["pid"] for e in recorded["processes"] if process_start_time(e["pid"]) == e["start"]]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    still = [p for p in survivors if process_start_time(p) is not None]  # some exit late on their own
    if survivors:  # Ray's agents outlived the killed driver: the next run stopped those still there
        assert "Ray processes left behind by an earlier run" in done.stdout or not still
    assert not [p for p in survivors if process_start_time(p) is not None]
    assert not (out / RECORD).exists()  # a clean end leaves no record


@pytest.mark.slow
@pytest.mark.parametrize("gib", [1.0, 3.5, 6.0])  # 6: the raylet maps the store twice
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


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_planted_record_never_gets_an_unrelated_process_killed(tmp_path):
    """A record naming the user's own `sleep` (right pid and start time) proves nothing: the process
    lacks the run's id in its environment. Nor is a live driver's Ray touched."""
    from curation.local_ray import RECORD, clear_orphans, process_start_time

    sleeper = subprocess.Popen(["sleep", "600"])
    try:
        start = process_start_time(sleeper.pid)
        dead_driver = {"pid": 2**22 - 7, "start": 1}
        planted = {"run": "abc", "driver": dead_driver, "processes": [{"pid": sleeper.pid, "start": start}]}
        (tmp_path / RECORD).write_text(json.dumps(planted))
        assert clear_orphans(tmp_path) == 0 and sleeper.poll() is None
        (tmp_path / RECORD).write_text(json.dumps([{"pid": sleeper.pid, "start": start}]))  # the older format
        assert clear_orphans(tmp_path) == 0 and sleeper.poll() is None
        ours = subprocess.Popen(["sleep", "600"], env=os.environ | {"MASK2DIT_RAY_RUN": "abc"})
        record = planted | {"processes": [{"pid": ours.pid, "start": process_start_time(ours.pid)}]}
        live = record | {"driver": {"pid": os.getpid(), "start": process_start_time(os.getpid())}}
        (tmp_path / RECORD).write_text(json.dumps(live))
        assert clear_orphans(tmp_path) == 0 and ours.poll() is None  # its driver is alive: left alone
        # Provably the run's own, even unlisted: a run killed in its first seconds recorded no pids yet.
        (tmp_path / RECORD).write_text(json.dumps(record | {"processes": []}))
        time.sleep(0.2)
        assert clear_orphans(tmp_path) == 1 and ours.wait(timeout=10) == -signal.SIGKILL
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_five_killed_runs_in_a_row_leave_no_ray_process_behind(tmp_path, multi_shot_video):
    """Each run is SIGKILLed once its Ray is up (the last one earlier, before it recorded a pid); the
    next clean run clears every process that carries any of their run ids."""
    from curation.local_ray import RECORD, RUN_ENV

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", RUN_ENV)}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(out),
               "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    runs = []
    for attempt in range(5):
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            record = json.loads((out / RECORD).read_text()) if (out / RECORD).exists() else {}
            ours = record.get("driver", {}).get("pid") == driver.pid
            if ours and (record["processes"] or attempt == 4):  # the last: killed before any pid is recorded
                break
            assert driver.poll() is None and time.time() < deadline, "the job ended before Ray was up"
            time.sleep(0.05)
        if attempt == 4:
            time.sleep(1.0)  # its Ray is starting
        runs.append(record["run"])
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    time.sleep(1.0)
    survivors = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        survivors += [entry.name for run in runs if f"{RUN_ENV}={run}".encode() in environ]
    assert not survivors, survivors


STOP = """
import json, sys
import psutil
from pathlib import Path
from curation.local_ray import start_ray, stop_ray
assert start_ray(2, Path(sys.argv[1]))
import ray
ray.get(ray.remote(lambda: 1).remote())
stop_ray()
print(json.dumps({"initialized": ray.is_initialized(), "left": [p.pid for p in psutil.Process().children(recursive=True)]}))
"""


def test_stopping_the_jobs_own_ray_leaves_none_of_its_processes(tmp_path):
    """stop_ray (the monitor killed first, then Ray's own shutdown) leaves no process of the Ray the
    job started and Ray disconnected (its speed is in benchmarks/curation.py, docs/benchmarks.md)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", STOP, str(tmp_path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stopped = json.loads(done.stdout.strip().splitlines()[-1])
    assert not stopped["initialized"] and stopped["left"] == []
