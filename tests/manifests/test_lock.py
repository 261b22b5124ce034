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


def test_a_link_planted_at_the_lock_is_refused_and_its_target_untouched(tmp_path):
    from manifests.lock import LOCK_NAME, OutputLock, OutputLocked

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputLocked, match="is a symbolic link"):
        OutputLock(out).acquire()
    assert victim.read_text() == "keep me"


def test_a_job_whose_lock_file_was_deleted_writes_nothing_more(tmp_path):
    """Deleting OUTPUT/.lock mid-run lets a second job lock a new file; the first one's next write is
    refused (fencing), so the two never write the folder together."""
    from manifests import read_table, write_part
    from manifests.lock import LOCK_NAME, OutputLock, OutputLockLost
    from manifests.schema import VideoRecord

    def row(video_id):
        return [VideoRecord(video_id=video_id, source_path=f"/{video_id}.mp4", status="ok")]

    first = OutputLock(tmp_path, "curation job").acquire()
    try:
        write_part(tmp_path, "videos", "a", row("a"))
        (tmp_path / LOCK_NAME).unlink()
        with OutputLock(tmp_path, "second job"):  # it gets in ...
            with pytest.raises(OutputLockLost, match="was deleted or replaced while this curation job held it"):
                write_part(tmp_path, "videos", "b", row("b"))  # ... and the first writes nothing more
        assert read_table(tmp_path, "videos")["video_id"].tolist() == ["a"]
    finally:
        first.release()
    write_part(tmp_path / "elsewhere", "videos", "c", row("c"))  # outside a held output: no check


def test_a_lease_not_renewed_in_time_stops_its_writer_before_it_can_expire(s3_env, monkeypatch):
    from manifests import write_part
    from manifests.lock import OutputLock, OutputLockLost
    from manifests.schema import VideoRecord
    from tests.support.s3_server import make_bucket

    make_bucket(s3_env, "fenced")
    monkeypatch.setenv("MASK2DIT_LEASE_S", "8")
    row = [VideoRecord(video_id="a", source_path="/a.mp4", status="ok")]
    with OutputLock("s3://fenced/out", "curation job") as lock:
        write_part("s3://fenced/out", "videos", "a", row)  # renewed just now: fine
        lock._lease.renewed -= 7  # renewals failed for 7 of the lease's 8 s
        with pytest.raises(OutputLockLost, match="last renewed 7 s ago"):
            write_part("s3://fenced/out", "videos", "b", row)


def test_a_lease_that_cannot_be_written_is_one_line_naming_the_output(s3_env, monkeypatch):
    from manifests.lock import OutputLock, OutputLocked
    from manifests.store import ObjectPath
    from tests.support.s3_server import make_bucket

    make_bucket(s3_env, "readonly")

    def denied(self, data):
        raise PermissionError("Access Denied")

    monkeypatch.setattr(ObjectPath, "write_bytes", denied)
    with pytest.raises(OutputLocked, match=r"s3://readonly/out/.lock: cannot write the output's lease "
                       r"\(PermissionError: Access Denied\); the output must be writable"):  # fmt: skip
        OutputLock("s3://readonly/out", "curation job").acquire()


def test_a_folder_link_inside_the_output_never_leads_a_write_out_of_it(tmp_path):
    from manifests.io import write_bytes_atomic
    from manifests.lock import OutputLock, OutputLocked

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "keyframes").symlink_to(elsewhere, target_is_directory=True)
    with OutputLock(out, "curation job"):
        with pytest.raises(OutputLocked, match="leads out of the output folder"):
            write_bytes_atomic(out / "keyframes" / "v_0000000.jpg", b"jpeg")
        write_bytes_atomic(out / "run.json", b"{}")  # inside: written
    assert list(elsewhere.iterdir()) == [] and (out / "run.json").read_bytes() == b"{}"
