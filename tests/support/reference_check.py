"""The recorded curation outputs from before the stage refactor, and the comparison that checks them."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "curation_reference.json"


def assert_same_rows(a, b, path=""):
    """Equal, floats to 1e-6 relative (embeddings: float16 as stored)."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: columns {set(a) ^ set(b)}"
        for k in a:
            assert_same_rows(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_rows(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
