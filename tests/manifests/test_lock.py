"""Tests of `manifests/lock.py`: one writer per output folder: an advisory lock that a second job is
refused by, and that dies with its holder."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifests import read_table
from manifests.store import ObjectPath
from tests.support import REPO
from tests.support.jobs import job
from tests.support.s3_server import make_bucket


def hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom manifests.lock import OutputLock\n"
            f"OutputLock({str(folder)!r}, 'curation job').acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_job_on_one_output_is_refused_and_a_dead_holders_lock_is_taken_over(
    ray_local, tmp_path, multi_shot_video, capsys
):
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        assert job(out, multi_shot_video.path) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and socket.gethostname() in err and "in use by another curation job" in err
        assert not (out / "videos.parquet").exists()  # it did nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # the holder dies without releasing anything
        holder.wait()
    assert job(out, multi_shot_video.path) == 0  # the stale lock is simply free
    assert len(read_table(out, "shots")) == len(multi_shot_video.cuts) + 1


def test_two_processes_racing_for_one_lock_get_exactly_one(tmp_path):
    code = ("import sys\nfrom manifests.lock import OutputLock, OutputLocked\n"
            f"try:\n    OutputLock({str(tmp_path)!r}).acquire(); print('won', flush=True); sys.stdin.read()\n"
            "except OutputLocked:\n    print('refused', flush=True)\n")  # fmt: skip
    racers = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True) for _ in range(4)]  # fmt: skip
    answers = sorted(r.stdout.readline().strip() for r in racers)
    for racer in racers:
        racer.communicate("")
    assert answers == ["refused"] * 3 + ["won"]


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
