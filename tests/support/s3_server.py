"""A real S3 endpoint on 127.0.0.1 for tests: moto's standalone server, in its own process.

The code under test is pointed at it only the standard way (AWS_ENDPOINT_URL and credentials in the
environment), as a user points it at MinIO or R2; nothing outside this file knows it is moto."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

# Fake credentials for a local server; a test asserts they are never written or printed.
ACCESS_KEY, SECRET_KEY = "AKIATESTONLY0000", "secret-for-local-test-server-only"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def s3_server():
    """Yield the environment (endpoint, credentials, region) a process needs to use the server."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                server.kill()
                raise RuntimeError("the local S3 test server did not start") from None
            time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    try:
        yield env
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()


def client(env: dict):
    """A boto3 S3 client for the server: what the tests use to set up buckets and look at objects."""
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"])  # fmt: skip


def make_bucket(env: dict, name: str) -> None:
    client(env).create_bucket(Bucket=name)


def upload(env: dict, local: str | os.PathLike, url: str) -> None:
    bucket, key = url.removeprefix("s3://").split("/", 1)
    client(env).upload_file(str(local), bucket, key)


def sorted_rows(frame):
    """A shots table in a fixed order, to compare reads from S3 and from local disk."""
    return frame.sort_values(["video_id", "shot_id"]).reset_index(drop=True)
