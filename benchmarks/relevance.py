"""Shot relevance: embedding throughput and combination-mining time.

    python benchmarks/relevance.py

- ViCLIP: shots embedded per second with the full-size ViCLIP-B/16 (random weights) on CPU, 8 frames
  at 224x224 per shot; on a GPU, ViCLIP-L/14 in bf16. Preprocessing included, decoding not.
- Miner: time for 10,000 and 20,000 shots (100 shots per clip, 384-d embeddings); the ratio shows
  it scales linearly with the corpus, because it only ever compares shots within a clip.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pandas as pd
import torch


def viclip_throughput(batch: int = 8, batches: int = 2) -> dict:
    from model.viclip import VICLIP_B16, VICLIP_L14, ViCLIP, preprocess_frames

    gpu = torch.cuda.is_available()
    config = VICLIP_L14 if gpu else VICLIP_B16
    model = ViCLIP(config).eval()
    if gpu:
        model = model.cuda().to(torch.bfloat16)
    frames = np.random.default_rng(0).integers(0, 255, (batch, 8, 360, 640, 3), dtype=np.uint8)
    run = lambda: model.video_embeddings(torch.stack([preprocess_frames(f) for f in frames]))  # noqa: E731
    run()
    began = time.perf_counter()
    for _ in range(batches):
        run()
    if gpu:
        torch.cuda.synchronize()
    rate = batch * batches / (time.perf_counter() - began)
    name = (
        "ViCLIP-L/14 bf16 on " + torch.cuda.get_device_name()
        if gpu
        else f"ViCLIP-B/16 fp32 on CPU ({torch.get_num_threads()} threads)"
    )
    print(f"{name}: {rate:.2f} shots/s (batch {batch}, 8 frames of 224x224 each)")
    return {"model": name, "shots_per_s": rate, "batch": batch}


def miner_time(shots: int) -> float:
    from curation.combine import mine
    from curation.config import CombineConfig

    rng = np.random.default_rng(0)
    per_clip = 100
    rows, embeddings = [], []
    for i in range(shots):
        clip = i // per_clip
        scene = rng.integers(0, 10)
        vector = np.random.default_rng([clip, scene]).normal(size=384) + 0.5 * rng.normal(size=384)
        rows.append({"shot_id": f"s{i}", "video_id": f"v{clip // 6}", "clip_index": clip % 6, "status": "ok",
                     "num_frames": 120, "start_frame": (i % per_clip) * 120})  # fmt: skip
        embeddings.append(vector / np.linalg.norm(vector))
    shots_df = pd.DataFrame(rows)
    emb_df = pd.DataFrame({"shot_id": shots_df["shot_id"], "embedding": embeddings, "embedder": "bench"})
    began = time.perf_counter()
    combos, _ = mine(shots_df, emb_df, CombineConfig())
    seconds = time.perf_counter() - began
    print(f"miner: {shots} shots in {shots // per_clip} clips -> {len(combos)} combinations in {seconds:.2f} s")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shots", type=int, nargs=2, default=[10_000, 20_000], metavar=("SMALL", "LARGE"),
                        help="corpus sizes the miner is timed on (default: %(default)s)")  # fmt: skip
    args = parser.parse_args()
    viclip_throughput()
    small, large = miner_time(args.shots[0]), miner_time(args.shots[1])
    growth = args.shots[1] / args.shots[0]
    print(
        f"miner scaling {args.shots[0]} -> {args.shots[1]} shots: {large / small:.2f}x time for {growth:g}x shots "
        f"(quadratic would be {growth**2:g}x)"
    )


if __name__ == "__main__":
    main()
