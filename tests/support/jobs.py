"""Curation runs as the tests start them, and ways to damage a manifest on purpose."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

import pandas as pd

from curation.run import main
from tests.conftest import CLIP_MINUTES


def run_job(output, *inputs, extra=()):
    return main(["--input", *map(str, inputs), "--output", str(output), "--clip-minutes", f"{CLIP_MINUTES}", *extra])


def curate_one(out, video, *extra):
    from curation.run import main

    return main(["--input", str(video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
                 "--within", "video", "--min-relevance", "-10", *extra])  # fmt: skip


SECRET = "hostile-key-1a2b3c4d5e6f"


def job(out, *inputs, extra=()):
    from curation.run import main

    flags = [a for path in inputs for a in ("--input", str(path))]
    return main([*flags, "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video",
                 "--min-relevance", "-10", *extra])  # fmt: skip


def damaged_copy(manifest, tmp_path, table: str, change) -> Path:  # noqa: F811
    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    part = sorted(glob.glob(str(copy / f"{table}.parquet" / "part-*.parquet")))[0]
    frame = pd.read_parquet(part)
    change(frame)
    frame.to_parquet(part)
    return copy


def set_value(column, value):
    def change(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value

    return change
