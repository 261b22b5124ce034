"""End to end: a job killed during annotation pays again at most the requests that were in flight."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from manifests import read_table
from tests.conftest import CLIP_MINUTES
from tests.support import REPO
from tests.support.jobs import SECRET


@pytest.mark.slow
def test_a_kill_during_annotation_pays_again_at_most_the_requests_in_flight(tmp_path, multi_shot_video):
    from tests.support.fake_gemini import FakeGemini, reply, shots_in, valid_reply

    concurrency, reasks = 2, 1
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GOOGLE_API_KEY")}
    env |= {"GEMINI_API_KEY": SECRET, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    slow = lambda i, body: (*reply(valid_reply(shots_in(body))), 1.0)  # noqa: E731  (each reply takes 1 s)

    def command_for(out, url):
        return [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(out),
                "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10", "--caption-shots",
                "--gemini-base-url", url, "--gemini-concurrency", str(concurrency), "--gemini-max-reasks", str(reasks),
                "--gemini-backoff", "0.01"]  # fmt: skip

    with FakeGemini(slow) as server:
        command = command_for(tmp_path / "o", server.url)
        with FakeGemini(slow) as reference:  # an uninterrupted run: what annotating everything costs
            once = command_for(tmp_path / "ref", reference.url)
            assert subprocess.run(once, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
            needed = len(reference.requests)
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 200
        while len(server.requests) < needed // 2:
            assert driver.poll() is None and time.time() < deadline
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)  # mid-annotation, replies in flight
        driver.wait()
        assert subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
    paid_again = len(server.requests) - needed
    assert 0 <= paid_again <= concurrency * (1 + reasks), (len(server.requests), needed)
    assert (read_table(tmp_path / "o", "shot_captions")["status"] == "ok").all()
