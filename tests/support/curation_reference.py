"""What a curation run produced, as plain JSON: the before/after record of the stage refactor.

    python tests/support/curation_reference.py OUT.json   # runs the job on the test videos, writes the record
    python tests/support/curation_reference.py OUT.json --kinds   # on the video of every shot kind

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


# Every shot kind in one video (tests/data/curation_kinds_reference.json, recorded at commit 1ce3729,
# before the stages' data model of curation/tasks.py and curation/cuts.py): a hard cut, a dissolve, a
# nearly black shot, a shot shorter than --min-shot-seconds, a held frame and a letterboxed shot.
KIND_FLAGS = ["--min-shot-seconds", "1.5", "--min-mean-luma", "25", "--within", "video", "--scenes", "2",
              "--keep-all", "--min-relevance", "-10"]  # fmt: skip


def write_kinds_video(folder: Path) -> Path:
    from curation.samples import synthetic_shot_frames, write_frames

    rng = np.random.default_rng(5)
    shots = [list(synthetic_shot_frames(i, n, 160, 96, rng)) for i, n in enumerate((60, 70, 50, 20, 50, 60))]
    frames = shots[0][:-12] + [((1 - (k + 0.5) / 24) * a + (k + 0.5) / 24 * b).astype(np.uint8)
                               for k, (a, b) in enumerate(zip(shots[0][-12:] + shots[1][:12], shots[1][:24]))]  # fmt: skip
    frames = frames[: len(shots[0]) - 12 + 24] + shots[1][24:]  # a 24-frame dissolve from shot 0 into shot 1
    frames += [(f * 0.06).astype(np.uint8) for f in shots[2]]  # nearly black
    frames += shots[3]  # 20 frames: short
    frames += [shots[4][0]] * len(shots[4])  # a held frame: static
    for f in shots[5]:  # letterboxed
        boxed = np.zeros_like(f)
        boxed[12:84] = f[12:84]
        frames.append(boxed)
    folder.mkdir(parents=True, exist_ok=True)
    return write_frames(folder / "kinds.mp4", frames, 24.0, crf=18)


def main(path: str, kinds: bool = False) -> None:
    import tempfile

    from curation.run import main as curate

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if kinds:
            assert (
                curate(["--input", str(write_kinds_video(Path(tmp) / "videos")), "--output", str(out), *KIND_FLAGS])
                == 0
            )
        else:
            videos = write_videos(Path(tmp) / "videos")
            assert curate(["--input", *map(str, videos), "--output", str(out), *FLAGS]) == 0
        Path(path).write_text(json.dumps(record(out), indent=1, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1], kinds="--kinds" in sys.argv[2:])
