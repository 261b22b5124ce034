"""Hostile inputs and faults: a lock on the output, row checks before training, the Gemini key kept
to the process that sends requests, dangling combinations, pandas round trips, damaged files,
bounded re-asks. Each test failed on the code before its fix."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from manifests import read_table
from manifests.io import ManifestError
from tests.conftest import CLIP_MINUTES
from tests.test_training import CONFIG, manifest  # noqa: F401  (fixture: a curated, captioned manifest)

REPO = Path(__file__).resolve().parent.parent
SECRET = "hostile-key-1a2b3c4d5e6f"


def job(out, *inputs, extra=()):
    from curation.run import main

    flags = [a for path in inputs for a in ("--input", str(path))]
    return main([*flags, "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video",
                 "--min-relevance", "-10", *extra])  # fmt: skip


# --- 1. one job per output ---------------------------------------------------------------------


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


# --- 2. row checks at the door of read_table and training --------------------------------------


def damaged_copy(manifest, tmp_path, table: str, change) -> Path:  # noqa: F811
    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    part = sorted(glob.glob(str(copy / f"{table}.parquet" / "part-*.parquet")))[0]
    frame = pd.read_parquet(part)
    change(frame)
    frame.to_parquet(part)
    return copy


def swap(frame):
    frame.loc[0, "start_frame"], frame.loc[0, "end_frame"] = frame.loc[0, "end_frame"], frame.loc[0, "start_frame"]


def triple(frame):
    frame.loc[0, "num_frames"] = 3 * frame.loc[0, "num_frames"]


def set_value(column, value):
    def change(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value

    return change


GARBAGE = {
    "start and end swapped": ("shots", swap, "end_frame must be after start_frame"),
    "num_frames tripled": ("shots", triple, "num_frames must equal end_frame - start_frame"),
    "fps zero": ("shots", set_value("fps", 0.0), "fps must be a positive number"),
    "fps negative": ("shots", set_value("fps", -24.0), "fps must be a positive number"),
    "ok caption null": ("shot_captions", set_value("caption", None), "a caption with status ok must be non-empty"),
    "ok captions missing": ("annotations", set_value("captions", None), "needs one non-empty caption per shot"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_training_refuses_garbage_rows_naming_table_row_and_column(manifest, tmp_path, case, capsys):  # noqa: F811
    from training.train import main

    table, change, message = GARBAGE[case]
    broken = damaged_copy(manifest, tmp_path, table, change)
    with pytest.raises(ManifestError, match=message) as caught:
        read_table(broken, table)
    assert f"table {table!r} row 0" in str(caught.value) and "part-" in str(caught.value)
    stage = "sft" if table == "annotations" else "pretrain"
    code = main(["--config", str(CONFIG), f"data.manifest={broken}", f"run.output={tmp_path / 'run'}",
                 f"model.path={tmp_path / 'model'}", f"data.stage={stage}", "data.scenes=3",
                 "data.allow_uncaptioned=false"])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


# --- 6 and 7. what pandas writes, NaN, damaged pages -------------------------------------------


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


# --- 3. the key stays in the process that sends requests ---------------------------------------


def environ_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def descendants(pid: int) -> set[int]:
    children, found = {}, set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_no_ray_process_of_the_job_sees_the_gemini_key(tmp_path, multi_shot_video):
    from tests.fake_gemini import FakeGemini

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GOOGLE_API_KEY")}
    env |= {"GEMINI_API_KEY": SECRET, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}  # short: sockets
    leaks, seen = set(), set()
    with FakeGemini() as server:
        command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output",
                   str(tmp_path / "out"), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance",
                   "-10", "--gemini-base-url", server.url, "--gemini-input", "video", "--num-cpus", "2"]  # fmt: skip
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while driver.poll() is None:
            for pid in descendants(driver.pid):  # Ray's raylet, GCS, workers, agents: all started by the job
                seen.add(pid)
                if SECRET.encode() in environ_of(pid):
                    leaks.add(pid)
            time.sleep(0.1)
        out, err = driver.communicate()
    assert driver.returncode == 0, err[-3000:]
    assert len(seen) >= 3  # Ray's processes were there to look at
    assert not leaks, f"{len(leaks)} of {len(seen)} Ray processes had the key in their environment"
    assert server.requests and all(r["headers"]["x-goog-api-key"] == SECRET for r in server.requests)
    assert SECRET not in out + err


# --- 4. a combination whose shots are gone -----------------------------------------------------


@pytest.mark.slow
def test_a_dangling_combination_is_a_failed_row_and_the_run_goes_on(ray_local, tmp_path, multi_shot_video):
    from manifests.io import remove_part

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(multi_shot_video.path, videos / name)
    (videos / "b.mp4").write_bytes((videos / "b.mp4").read_bytes() + b"\0")  # another file, another video id
    out = tmp_path / "out"
    assert job(out, videos) == 0
    rows = read_table(out, "videos")
    moved = rows[rows["source_path"].str.endswith("a.mp4")]["video_id"].iloc[0]
    remove_part(out, "shots", moved)  # its shots are gone ...
    (videos / "a.mp4").rename(tmp_path / "a-moved.mp4")  # ... and its source moved away
    for _ in range(2):  # every re-run, not only the first
        assert job(out, videos) == 0
        notes = read_table(out, "annotations")
        dangling = notes[notes["video_id"] == moved]
        assert len(dangling) and (dangling["status"] == "failed").all()
        assert dangling["error"].str.contains("is not in shots.parquet").all()
        assert (dangling["error_stage"] == "media").all()
        assert (notes[notes["video_id"] != moved]["status"] == "unannotated").all()  # the others go on


# --- 8. re-asks quote a bounded excerpt --------------------------------------------------------


def test_a_huge_invalid_reply_is_not_echoed_back_in_every_reask():
    from tests.fake_gemini import FakeGemini, reply
    from tests.test_annotation import annotator, parts

    huge = "not json " * 600_000  # 5.4 MB of garbage
    with FakeGemini(lambda i, body: reply(huge)) as server:
        result = annotator(server, max_reasks=2).annotate(parts(2), 2)
    assert result.status == "invalid" and len(server.requests) == 3
    sizes = [len(str(r["body"])) for r in server.requests]
    assert max(sizes) < sizes[0] + 20_000, sizes  # each re-ask adds a bounded excerpt, not the reply
    assert "characters cut" in str(server.requests[1]["body"]["contents"])
    assert len(result.error) < 10_000
