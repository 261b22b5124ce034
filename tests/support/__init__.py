"""What the tests share that is not a fixture: local servers (S3, Gemini), workers that crash on
purpose, torchrun workers, the curation reference run, and helpers used by several test modules."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
