"""What a curation run produced, as plain JSON: the before/after record of the stage refactor.

    python tests/support/curation_reference.py OUT.json   # runs the job on the test videos, writes the record

tests/data/curation_reference.json was written by this script with the job as it was *before*
curation became stages on one executor (commit 12bb5c8), with the embeddings read from the
source; test_stages.py runs today's job on the same videos and compares row for row.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np

from manifests import read_table

VIDEOS = {"multi_shot.mp4": dict(shot_lengths=[60, 40, 90, 30, 50], seed=1),
          "long.mp4": dict(shot_lengths=[50, 45, 105, 90, 50, 70], seed=2, gop=30)}  # fmt: skip
FLAGS = ["--clip-minutes", f"{96 / 24 / 60}", "--min-shot-seconds", "1", "--min-shot-frames", "20", "--within", "video",
         "--scenes", "2", "--keep-all"]  # fmt: skip
VOLATILE = {"processing_s", "source_path", "error"}  # timings and the temporary folder's path


def write_videos(folder: Path) -> list[Path]:
    from curation.samples import write_synthetic_video

    folder.mkdir(parents=True, exist_ok=True)
    return [write_synthetic_video(folder / name, fps=24.0, **kw).path for name, kw in VIDEOS.items()]


def record(out: Path) -> dict:
    """Every table's rows, sorted, without timings; embeddings rounded to float16 as stored."""
    tables = {}
    for name, key in (("videos", "video_id"), ("clips", "clip_id"), ("shots", "shot_id"),
                      ("shot_embeddings", "shot_id"), ("combinations", "combination_id")):  # fmt: skip
        frame = read_table(out, name).sort_values(key)
        rows = []
        for row in frame.to_dict("records"):
            clean = {}
            for k, v in row.items():
                if k in VOLATILE or (name == "shots" and k == "keyframe_path"):
                    continue
                if isinstance(v, np.ndarray):
                    v = v.tolist()
                elif isinstance(v, np.generic):
                    v = v.item()
                if isinstance(v, float) and v != v:
                    v = None
                clean[k] = v
            rows.append(clean)
        tables[name] = rows
    return tables


def main(path: str) -> None:
    import tempfile

    from curation.run import main as curate

    with tempfile.TemporaryDirectory() as tmp:
        videos = write_videos(Path(tmp) / "videos")
        out = Path(tmp) / "out"
        assert curate(["--input", *map(str, videos), "--output", str(out), *FLAGS]) == 0
        Path(path).write_text(json.dumps(record(out), indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1])
