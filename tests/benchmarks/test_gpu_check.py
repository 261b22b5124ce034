"""Tests of `benchmarks/gpu_check.py`: the one GPU check. Without CUDA it prints its plan and exits 0
fast; every command in the plan names real scripts and flags; a part that hangs or fails costs that
part alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks.gpu_check import PARTS, Part, markdown, pytest_counts, run_part
from tests.support import REPO


def test_without_cuda_it_prints_every_part_and_exits_0_in_seconds():
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ""}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert time.perf_counter() - began < 60
    assert "no CUDA GPU here" in done.stdout
    for part in PARTS:
        assert f"- {part.name} (timeout {part.timeout} s)" in done.stdout
        assert "python " + " ".join(part.argv) in done.stdout


def test_every_planned_command_names_a_script_and_flags_that_exist():
    helps = {}
    for part in PARTS:
        script = part.argv[0]
        if script == "-m":
            assert part.argv[1] == "pytest" and (REPO / part.argv[-1]).is_dir()
            continue
        assert (REPO / script).is_file(), script
        if script not in helps:
            helps[script] = subprocess.run([sys.executable, script, "--help"], cwd=REPO, capture_output=True,
                                           text=True, timeout=120).stdout  # fmt: skip
        flags = [a for a in part.argv if a.startswith("--")]
        hidden = {"--part", "--json"} if script.endswith("gpu_check.py") else set()
        missing = [f for f in flags if f not in helps[script] and f not in hidden]
        assert not missing, (part.name, missing)


def test_the_suite_marks_cuda_tests_the_check_selects():
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "--collect-only", "-q", "tests/model"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    files = {line.split("::")[0] for line in collected}
    assert {"tests/model/test_attention.py", "tests/model/test_cogvideox.py", "tests/model/test_wan.py",
            "tests/model/test_sequence_parallel.py"} <= files, done.stdout[-2000:]  # fmt: skip


def test_a_hanging_part_is_stopped_with_its_children_and_a_failing_part_keeps_its_output(tmp_path):
    marker = tmp_path / "child.pid"
    hang = Part("hang", "sleeps", 1, ("-c", "import os, subprocess, sys, time; "
                f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
                f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)"))  # fmt: skip
    row = run_part(hang, tmp_path, timeout=3)
    assert row["status"] == "timed out after 3 s" and row["seconds"] < 30
    child = int(marker.read_text())
    time.sleep(0.5)
    assert not os.path.exists(f"/proc/{child}") or "Z" in open(f"/proc/{child}/stat").read().split()[2]

    fail = Part("fail", "fails", 30, ("-c", "import json, sys; print('the reason'); "
                "json.dump({'frames_per_s': 1.5}, open(sys.argv[1], 'w')); sys.exit(3)", "{json}"))  # fmt: skip
    row = run_part(fail, tmp_path, timeout=30)
    assert row["status"] == "failed (exit 3)" and "the reason" in row["tail"]
    assert row["results"] == {"frames_per_s": 1.5} and (tmp_path / "fail.log").is_file()


def test_the_report_table_has_a_row_per_part_with_its_numbers():
    counts = pytest_counts("....\n1 failed, 20 passed, 2 skipped in 80.12s (0:01:20)\n")
    assert counts == {"failed": 1, "passed": 20, "skipped": 2}
    report = {"device": "NVIDIA H200", "started": "2026-12-05 01:00:00 UTC", "torch": "2.13.0", "cuda": "13.0",
              "wall_seconds": 300.0, "parts": [
                  {"part": "cuda-tests", "status": "ok", "seconds": 90.0, "results": counts},
                  {"part": "transnetv2", "status": "ok", "seconds": 12.0, "results": {"frames_per_s": 4321.0}},
                  {"part": "training-5b", "status": "ok", "seconds": 80.0, "results": [
                      {"scenes": 1, "tokens": 17776, "samples_per_s": 0.5, "mfu": 0.41, "peak_gib": 70.2}]},
                  {"part": "viclip", "status": "not run: out of time", "seconds": 0.0}]}  # fmt: skip
    table = markdown(report)
    assert "# GPU check: NVIDIA H200" in table
    assert "| cuda-tests | ok | 90.0 | 1 failed, 20 passed, 2 skipped |" in table
    assert "| transnetv2 | ok | 12.0 | 4,321 frames/s |" in table
    assert "1 scene(s), 17776 tokens: 0.50 samples/s, MFU 41%, peak 70.2 GiB" in table
    assert "| viclip | not run: out of time |" in table
    json.dumps(report)
