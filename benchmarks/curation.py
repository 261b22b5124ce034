"""Shot detection throughput: the curation job against PySceneDetect's CLI and plain decoding.

    python benchmarks/curation.py                  # generates a 20-minute 720p H.264 video (cached)
    python benchmarks/curation.py --video FILE     # or measures any video you give it

Prints, from one run on the same file: the curation job end to end (probe, clip windows, adaptive
detection, keyframes, manifests; frames/s and x real time), `scenedetect -i FILE detect-adaptive`,
the time just to decode every frame with PyAV (threaded), the ratios, and whether both found the
same cuts (within 1 frame).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av
import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"


def benchmark_video(minutes: float, fps: float = 24.0) -> Path:
    from curation.samples import write_synthetic_video

    path = CACHE / f"synthetic_{minutes:g}min_720p.mp4"
    if not path.exists():
        rng = np.random.default_rng(0)
        lengths, total = [], int(minutes * 60 * fps)
        while sum(lengths) < total:
            lengths.append(int(rng.integers(48, 400)))
        lengths[-1] -= sum(lengths) - total
        print(f"generating {path} ({total} frames, {len(lengths)} shots) ...", file=sys.stderr)
        tmp = path.with_suffix(".partial.mp4")
        write_synthetic_video(tmp, lengths, fps=fps, size=(1280, 720), seed=0, gop=int(fps * 4))
        tmp.rename(path)
    return path


def decode_only(path: Path) -> tuple[float, int]:
    began = time.perf_counter()
    frames = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            frames += 1
    return time.perf_counter() - began, frames


def our_job(path: Path, workdir: Path) -> tuple[float, list[int], dict]:
    import json

    out = workdir / "ours"
    began = time.perf_counter()
    subprocess.run([sys.executable, "curation/run.py", "--input", str(path), "--output", str(out)], check=True,
                   cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
    seconds = time.perf_counter() - began
    from manifests import read_table

    shots = read_table(out, "shots")
    return seconds, sorted(shots["start_frame"].tolist())[1:], json.loads((out / "run.json").read_text())


def scenedetect_cli(path: Path, workdir: Path) -> tuple[float, list[int]]:
    exe = shutil.which("scenedetect") or str(Path(sys.executable).with_name("scenedetect"))
    out = workdir / "cli"
    out.mkdir()
    began = time.perf_counter()
    subprocess.run([exe, "-i", str(path), "-o", str(out), "detect-adaptive", "list-scenes", "-f", "scenes.csv"],
                   check=True, capture_output=True)  # fmt: skip
    seconds = time.perf_counter() - began
    with open(out / "scenes.csv") as f:
        rows = list(csv.reader(f))
    header = next(i for i, r in enumerate(rows) if r and r[0] == "Scene Number")
    starts = [int(r[1]) - 1 for r in rows[header + 1 :] if r]  # CLI frames are 1-based
    return seconds, starts[1:]


def same_cuts(a: list[int], b: list[int], tolerance: int = 1) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="video to measure (default: a generated 720p video)")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the generated video")
    args = parser.parse_args()
    path = args.video or benchmark_video(args.minutes)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        duration = float(s.duration * s.time_base) if s.duration else float(c.duration / av.time_base)
        size = f"{s.codec_context.width}x{s.codec_context.height} {s.codec_context.name}"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        decode_s, frames = decode_only(path)
        ours_s, ours_cuts, record = our_job(path, tmp)
        cli_s, cli_cuts = scenedetect_cli(path, tmp)
    shots_s = record["this_run"]["wall_seconds"]  # probe + clip windows + detection + reconcile, in the job
    print(f"video: {path} ({size}, {frames} frames, {duration / 60:.1f} min)")
    print(f"{'':<44}{'seconds':>9}{'frames/s':>10}{'x real time':>13}")
    rows = [
        ("decode only (PyAV, threaded)", decode_s),
        ("our shot stage (probe, clips, detect, reconcile)", shots_s),
        ("our whole job (+ Ray start, embed, mine)", ours_s),
        ("scenedetect detect-adaptive (CLI)", cli_s),
    ]
    for name, seconds in rows:
        print(f"{name:<44}{seconds:9.1f}{frames / seconds:10.0f}{duration / seconds:13.1f}")
    print(f"shot stage vs the CLI: {cli_s / shots_s:.2f}x faster; shot stage / decode-only: {shots_s / decode_s:.2f}x")
    print(f"detection task time: {record['this_run']['detect_task_seconds']:.1f} s over {record['this_run']['clips']} "
          f"clips; embedding {record['relevance']['embedding']['seconds']:.1f} s")  # fmt: skip
    print(f"cuts: ours {len(ours_cuts)}, CLI {len(cli_cuts)}, same within 1 frame: {same_cuts(ours_cuts, cli_cuts)}")


if __name__ == "__main__":
    main()
