"""Shot detectors against ground truth: precision, recall and F1 per transition type.

    python benchmarks/shot_detection.py                 # 3 generated videos per family (about 4 minutes on 2 cores)
    python benchmarks/shot_detection.py --videos 6 --tolerance 2

Families of generated H.264 videos (320x180, 24 fps, shots of 48-120 frames with a moving box on a
gradient, `curation.samples.write_transition_video`), each with known transition frames:
- hard: hard cuts;
- dissolve: cross-dissolves of 8-32 frames (the true cut is the middle frame);
- fade: fades through black of 8-32 frames (the true cut is the middle frame);
- flash: hard cuts plus two-frame white flashes inside shots (a cut there is a false positive).
Every detector runs through the job's own decode pass (`curation.detect.detect_clip`, one clip) with
its defaults and --min-scene-frames 15; a detected cut within +-tolerance frames of a true one matches
it one to one (`model.metrics.boundary_matches`). Printed as a Markdown table, with the frames per
second of each detector and its ratio to PySceneDetect's adaptive detector in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

DETECTORS = ["content", "adaptive", "transnetv2", "adaptive+transnetv2"]
FAMILIES = ["hard", "dissolve", "fade", "flash"]


def family_video(folder: Path, family: str, seed: int):
    from curation.samples import write_transition_video

    rng = np.random.default_rng(1000 * FAMILIES.index(family) + seed)
    lengths = [int(n) for n in rng.integers(48, 120, size=8)]
    if family in ("dissolve", "fade"):
        transitions = [(family, int(rng.choice([8, 12, 16, 24, 32]))) for _ in lengths[1:]]
        lengths = [n + 32 for n in lengths]  # room for the longest transition inside each shot
    else:
        transitions = [("cut", 0) for _ in lengths[1:]]
    flashes = []
    if family == "flash":
        start = 0
        for n in lengths:
            flashes.append(start + int(rng.integers(16, n - 18)))
            start += n
    return write_transition_video(folder / f"{family}_{seed}.mp4", lengths, transitions, flashes=flashes,
                                  size=(320, 180), seed=seed)  # fmt: skip


def detect(video, kind: str, transnet):
    from curation.config import DetectorConfig
    from curation.detect import detect_clip
    from curation.split import plan_clips
    from manifests.probe import probe

    p = probe(str(video.path))
    window = plan_clips(p.num_frames, p.fps, 1e6, 0)[0]
    began = time.perf_counter()
    result = detect_clip(str(video.path), window, p.pts, p.fps, 0, DetectorConfig(kind=kind),
                         thumbnail_every=12, thumbnail_max_side=64, transnet=transnet)  # fmt: skip
    return result.cuts, time.perf_counter() - began, result.frames_decoded


def main() -> None:
    from model.metrics import BoundaryScore, boundary_matches
    from model.transnetv2 import TransNetV2Detector

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=3, help="videos per family (8 shots each)")
    parser.add_argument("--tolerance", type=int, default=2, help="frames a detected cut may be off")
    args = parser.parse_args()
    transnet = TransNetV2Detector.load("cpu", batch_windows=1)
    counts = {(d, f): [0, 0, 0] for d in DETECTORS for f in FAMILIES}
    seconds, frames = dict.fromkeys(DETECTORS, 0.0), dict.fromkeys(DETECTORS, 0)
    events = dict.fromkeys(FAMILIES, 0)
    with tempfile.TemporaryDirectory() as tmp:
        for family in FAMILIES:
            for seed in range(args.videos):
                video = family_video(Path(tmp), family, seed)
                events[family] += len(video.cuts)
                for kind in DETECTORS:
                    cuts, took, decoded = detect(video, kind, transnet)
                    seconds[kind] += took
                    frames[kind] += decoded
                    matched, extra, missed = boundary_matches(cuts, video.cuts, args.tolerance)
                    tally = counts[kind, family]
                    tally[0] += matched
                    tally[1] += extra
                    tally[2] += missed
    print(f"{time.strftime('%Y-%m-%d')}: {args.videos} videos per family, +-{args.tolerance} frames; true cuts: "
          + ", ".join(f"{f} {events[f]}" for f in FAMILIES))  # fmt: skip
    print("| detector | " + " | ".join(f"{f} P / R / F1" for f in FAMILIES) + " | frames/s | speed vs adaptive |")
    print("|---|" + "---|" * (len(FAMILIES) + 2))
    base = frames["adaptive"] / seconds["adaptive"]
    for kind in DETECTORS:
        cells = []
        for family in FAMILIES:
            s = BoundaryScore.of(*counts[kind, family])
            cells.append(f"{s.precision:.2f} / {s.recall:.2f} / **{s.f1:.2f}**")
        fps = frames[kind] / seconds[kind]
        print(f"| {kind} | " + " | ".join(cells) + f" | {fps:.0f} | {fps / base:.3f}x |")


if __name__ == "__main__":
    main()
