"""Tests of `curation/run.py`: curation job: long videos → 10-minute clips → shots → Parquet
manifests."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from curation.run import main
from curation.samples import write_synthetic_video
from manifests import read_table
from manifests.inspect import text_report
from manifests.schema import TABLES
from tests.conftest import CLIP_MINUTES
from tests.support import REPO
from tests.support.jobs import SECRET, curate_one, run_job


@pytest.fixture()
def bad_inputs(tmp_path, multi_shot_video):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.mp4").write_text("this is not a video\n")
    (bad / "empty.mp4").write_bytes(b"")
    data = multi_shot_video.path.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])  # index at the end: unreadable
    faststart = write_synthetic_video(tmp_path / "faststart.mp4", [60, 60, 60], faststart=True).path.read_bytes()
    (bad / "truncated_faststart.mp4").write_bytes(faststart[: len(faststart) // 2])  # index lists missing frames
    return bad


def environ_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def test_bad_inputs_become_failed_rows_and_the_run_goes_on(ray_local, tmp_path, multi_shot_video, bad_inputs):
    out = tmp_path / "out"
    missing = tmp_path / "missing.mp4"
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# one per line\n{multi_shot_video.path}\n{missing}\n")
    assert run_job(out, listing, bad_inputs) == 0
    videos = read_table(out, "videos").set_index("source_path")
    assert videos.loc[str(multi_shot_video.path), "status"] == "ok"
    failed = videos[videos["status"] == "failed"]
    assert len(failed) == 5
    errors = {p.rsplit("/", 1)[-1]: e for p, e in failed["error"].items()}
    assert "not found" in errors["missing.mp4"]
    assert "empty" in errors["empty.mp4"]
    assert "not a video, or truncated" in errors["notes.mp4"] and "truncated" in errors["truncated.mp4"]
    assert "truncated or corrupt" in errors["truncated_faststart.mp4"]
    report = text_report(out)
    assert "5 failed" in report and "missing.mp4" in report


def test_job_fails_only_when_nothing_could_be_processed(ray_local, tmp_path, bad_inputs, capsys):
    assert run_job(tmp_path / "out", bad_inputs) == 1
    assert "no video could be processed" in capsys.readouterr().err


def test_output_that_is_a_file_names_the_flag(tmp_path, capsys):

    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(SystemExit):
        main(["--output", str(target)])
    err = capsys.readouterr().err
    assert f"--output {target} exists and is not a directory" in err and "--:" not in err


@pytest.mark.slow
def test_a_deleted_table_is_reported_then_repaired_by_a_rerun(ray_local, tmp_path, multi_shot_video, capsys):
    from manifests.inspect import text_report

    out = tmp_path / "out"
    assert curate_one(out, multi_shot_video) == 0
    combos = read_table(out, "combinations")
    assert len(combos)
    mode = (out / "run.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # shareable like every other file, not 0600
    shutil.rmtree(out / "shots.parquet")
    assert "shots.parquet is missing" in text_report(out)
    assert read_table(out, "combinations")["combination_id"].tolist() == combos["combination_id"].tolist()
    assert curate_one(out, multi_shot_video) == 0  # the video is redone, not "already done"
    assert len(read_table(out, "shots")) == len(multi_shot_video.cuts) + 1
    assert read_table(out, "combinations")["combination_id"].tolist() == combos["combination_id"].tolist()
    assert "inconsistencies" not in text_report(out)
    seconds = json.loads((out / "run.json").read_text())["seconds"]
    assert {"total", "shots", "probe_tasks", "detect_tasks", "embed", "combine", "annotate"} <= seconds.keys()
    assert seconds["total"] >= seconds["shots"] + seconds["combine"]  # embedding streams inside "shots"


@pytest.mark.slow
def test_every_table_exists_with_its_schema_when_nothing_qualifies(ray_local, tmp_path, multi_shot_video, capsys):

    out = tmp_path / "out"
    assert curate_one(out, multi_shot_video, "--min-relevance", "100") == 0  # no pair is that relevant
    for name, schema in TABLES.items():
        table = pd.read_parquet(out / f"{name}.parquet")  # plain pandas, as a user reads them
        assert list(table.columns) == schema.names, name
    assert len(pd.read_parquet(out / "combinations.parquet")) == 0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_no_ray_process_of_the_job_sees_the_gemini_key(tmp_path, multi_shot_video):
    from curation.local_ray import descendants
    from tests.support.fake_gemini import FakeGemini

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


def test_relative_paths_under_a_ray_job_are_refused_with_the_absolute_path_to_give(tmp_path, monkeypatch, capsys):

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what `ray job submit` sets for its entrypoint
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        main(["--input", "films", "--output", "out"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--output out is relative" in err and "--input films is relative" in err and "absolute path" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--outptu", "x"], "unknown flag --outptu (did you mean --output?)"),
        (["--output", "README.md/sub"], "--output README.md/sub: README.md is a file, not a folder"),
        (
            ["--output", "{tmp}/o", "--config", "{tmp}/bad.yaml"],
            "shots.detectr (in --config): unknown key (did you mean shots.detector?)",
        ),
    ],
)
def test_curation_mistakes_are_one_usage_line_and_the_error_last(tmp_path, args, expected):
    (tmp_path / "bad.yaml").write_text("shots:\n  detectr: content\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run([sys.executable, "curation/run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 2 and lines[0].startswith("usage:"), done.stderr
    assert expected in lines[-1] and "Traceback" not in done.stderr


def test_a_store_that_cannot_be_reached_is_said_at_the_door(s3, tmp_path, capsys, monkeypatch):

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3["AWS_ENDPOINT_URL"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, s3[key])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert main(["--input", str(tmp_path), "--output", "s3://no-such-bucket/out"]) == 2
    assert "bucket s3://no-such-bucket does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_full_disk_stops_with_one_line_and_leaves_no_temporary_files(ray_local, tmp_path, multi_shot_video,
                                                                     monkeypatch, capsys):  # fmt: skip

    real = Path.write_bytes

    def full(self, data):
        real(self, data[: len(data) // 2])  # part of the file reaches the disk, then it is full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    out = tmp_path / "out"
    assert main(["--input", str(multi_shot_video.path), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("No space left on device") == 1 and "re-run the same command" in err and "Traceback" not in err
    assert not [p for p in out.rglob(".tmp-*")]
    assert not (out / "videos.parquet").exists()  # nothing a later run could take for done


def test_ctrl_c_prints_how_to_resume(monkeypatch, tmp_path, capsys):
    import curation.run as job

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(job, "run", interrupted)
    assert job.main(["--output", str(tmp_path)]) == 130
    assert "interrupted; re-run the same command to resume" in capsys.readouterr().err


def test_a_run_whose_every_annotation_failed_is_told_apart_from_one_with_some_captions():
    from curation.run import every_annotation_failed

    def report(key=True, **statuses):
        return {"combinations": {"statuses": statuses, "key_present": key}, "total": {"requests": 3}}

    assert every_annotation_failed(report(error=3)) == "3 combinations"
    assert every_annotation_failed(report(error=8, unannotated=40)) == "8 combinations"  # the breaker stopped
    assert every_annotation_failed(report(error=2, ok=1)) is None
    assert every_annotation_failed(report(error=2, invalid=1)) is None  # the model answered
    assert every_annotation_failed(report(key=False, unannotated=4)) is None  # no key: nothing was tried
    assert every_annotation_failed(report(key=False, failed=1, unannotated=4)) is None  # the rest wait for a key
    assert every_annotation_failed(report(key=False, failed=2)) == "2 combinations"
    assert every_annotation_failed(report()) is None
    both = {"combinations": {"statuses": {"failed": 2}}, "shots": {"statuses": {"error": 5}, "key_present": True}}
    assert every_annotation_failed(both) == "2 combinations, 5 shots"


def test_a_job_whose_every_caption_request_fails_exits_1_with_where_the_errors_are(
    ray_local, tmp_path, multi_shot_video, monkeypatch, capsys
):
    from tests.support.annotation import SECRET
    from tests.support.annotation import run_job as run_captioned
    from tests.support.fake_gemini import FakeGemini, error

    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    with FakeGemini(lambda i, body: error(403, "PERMISSION_DENIED")) as server:
        assert run_captioned(tmp_path / "out", multi_shot_video, "--gemini-base-url", server.url) == 1
    err = capsys.readouterr().err
    assert "error: every annotation failed (" in err and "re-run the same command to retry them" in err
    assert (read_table(tmp_path / "out", "shots")["status"] == "ok").any()  # the curated tables are all there


def test_output_inside_input_and_input_inside_output_are_refused_and_every_input_flag_counts(tmp_path, capsys):
    from curation.run import parse_args

    films = tmp_path / "films"
    films.mkdir()
    assert main(["--input", str(films), "--output", str(films / "out")]) == 2
    assert "is inside --input" in capsys.readouterr().err
    assert main(["--input", str(films), "--output", str(tmp_path)]) == 2
    assert "is inside --output" in capsys.readouterr().err
    config = parse_args(["--input", "a.mp4", "--input", "b.mp4", "c.mp4", "--output", str(tmp_path / "o")])
    assert [str(p) for p in config.inputs] == ["a.mp4", "b.mp4", "c.mp4"]
