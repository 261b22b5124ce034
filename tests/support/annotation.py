"""Helpers of the Gemini tests: a client against the fake server, request parts, a job run with captions."""

from __future__ import annotations

from google.genai import types

from curation.config import AnnotateConfig
from curation.gemini import GeminiAnnotator
from tests.conftest import CLIP_MINUTES

SECRET = "test-key-9f8e7d6c5b4a"


JPEG = b"\xff\xd8\xff\xe0fake-jpeg"


def annotator(server, **overrides) -> GeminiAnnotator:
    settings = AnnotateConfig(**({"base_url": server.url, "timeout": 5.0, "max_retries": 2, "backoff": 0.01,
                                  "max_backoff": 0.05, "max_reasks": 1, "rpm": 6000.0, "concurrency": 4} | overrides))  # fmt: skip
    return GeminiAnnotator(settings, SECRET)


def parts(num_shots: int = 2) -> list:
    out = []
    for i in range(num_shots):
        out += [
            types.Part.from_text(text=f"Shot {i + 1} of {num_shots} (2.0 s):"),
            types.Part.from_bytes(data=JPEG, mime_type="image/jpeg"),
        ]
    return out


def run_job(out, video, *extra):
    from curation.run import main

    return main(["--input", str(video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
                 "--within", "video", "--min-relevance", "-10", "--caption-shots", *extra])  # fmt: skip
