"""A local stand-in for the Gemini REST API (generateContent), scripted per test."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACTOR1 = "a tall man in a grey coat"


def valid_reply(num_shots: int) -> dict:
    return {
        "characters": [{"name": "Actor1", "description": ACTOR1}],
        "background": "A rainy street at night.",
        "shots": [f"Actor1 ({ACTOR1}) walks to the corner, step {i + 1}." for i in range(num_shots)],
    }


def reply(
    payload: dict | str, finish: str = "STOP", tokens: tuple[int, int] = (100, 20), thoughts: int = 0
) -> tuple[int, dict]:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    usage = {
        "promptTokenCount": tokens[0],
        "candidatesTokenCount": tokens[1],
        "totalTokenCount": sum(tokens) + thoughts,
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts  # Gemini 2.5 reports thinking apart from the reply
    return 200, {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish}],
        "usageMetadata": usage,
    }


def error(code: int, status: str, retry_delay: str | None = None) -> tuple[int, dict]:
    details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}] if retry_delay else []
    return code, {"error": {"code": code, "message": f"fake {status}", "status": status, "details": details}}


def shots_in(body: dict) -> int:
    """How many shots the request shows (from its 'Shot i of N' labels)."""
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            match = re.match(r"Shot \d+ of (\d+)", part.get("text", ""))
            if match:
                return int(match.group(1))
    return 1


class FakeGemini:
    """script(call_index, body) -> (status, json) or (status, json, delay_seconds)."""

    def __init__(self, script: Callable[[int, dict], tuple] | None = None):
        self.script = script or (lambda i, body: reply(valid_reply(shots_in(body))))
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    index = len(fake.requests)
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body,
                                          "time": time.monotonic()})  # fmt: skip
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    status, payload, *delay = fake.script(index, body)
                    if delay:
                        time.sleep(delay[0])
                    data = json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass
                finally:
                    with fake._lock:
                        fake.in_flight -= 1

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeGemini:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
