"""End to end: the job submitted with `ray job submit` to a Ray head of its own."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from manifests import read_table
from tests.support import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_job_submit_against_a_started_head(tmp_path, multi_shot_video):
    ray_bin = Path(sys.executable).with_name("ray")
    ray_cmd = [str(ray_bin)] if ray_bin.exists() else [sys.executable, "-m", "ray.scripts.scripts"]
    # The head as docs/curation.md starts it: token auth on explicitly (a Ray build's default differs),
    # the token in a file (here a private one instead of ~/.ray/auth_token). Other tests run an
    # in-process Ray with auth disabled.
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    submit_env = env  # the manual's submit command
    gcs_port, dashboard_port = free_port(), free_port()
    # Every agent gets its own port: Ray's defaults (e.g. 52365) are taken when another Ray (the
    # in-process one other tests use, or a user's) runs on the same machine, and the job agent
    # then never comes up ("No available agent to submit job").
    agent_ports = [
        f"--{name}={free_port()}"
        for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                     "metrics-export-port", "ray-client-server-port")
    ]  # fmt: skip
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    head = subprocess.Popen(
        [*ray_cmd, "start", "--head", "--block", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", f"--temp-dir={ray_tmp}", "--disable-usage-stats", *agent_ports],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
                break
            except urllib.error.HTTPError:  # 401: the dashboard answers, and wants the token
                break
            except OSError:
                assert head.poll() is None, "ray start --head exited"
                assert time.time() < deadline, "the Ray head did not come up in 120 s"
                time.sleep(1)
        out = tmp_path / "out"
        while True:  # the dashboard answers before its job agent is ready
            job = subprocess.run(
                [*ray_cmd, "job", "submit", f"--address={address}", "--working-dir", str(REPO), "--",
                 "python", "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(out)],
                env=submit_env, capture_output=True, text=True, timeout=600,
            )  # fmt: skip
            if "No available agent" not in job.stderr or time.time() > deadline:
                break
            time.sleep(2)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "succeeded" in job.stdout
        shots = read_table(out, "shots")
        assert len(shots) == len(multi_shot_video.cuts) + 1
    finally:
        # The head and every process it started share one session: a throwaway cluster goes at once.
        try:
            os.killpg(head.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head.wait(timeout=30)
