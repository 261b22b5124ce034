"""Manifest reads and writes as a corpus grows: synthetic manifests through the job's own writer.

    python benchmarks/manifests.py                      # 1k and 10k videos, 40 shots each
    python benchmarks/manifests.py --videos 1000 10000 100000

For each size it writes the tables the curation driver writes (`shots`, `clips`, `videos`), once
as before batching (three parts per video, `manifests.io.write_part`) and once through the job's
batched writer (`curation.reconcile.CommitBatch`, 64 videos per part), and times: the commit per
video; a validated `read_table` of shots beside a plain `pd.read_parquet`
(the floor); resume planning (`curation.probe.completed_video_ids`); the miner (the combine
stage, `curation.combine.mine`, over 32-d embeddings of every shot, in one process and as Ray
tasks over runs of groups, with the ratio of the two); and training's manifest
check (`read_table` + `check_finite`); then `python -m manifests compact` and the same reads on
the compacted manifest. It prints each step's growth from one size to the next as a ratio to the
growth in videos (1.00 = linear).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

SHOTS = 40


def write_manifest(root: Path, videos: int, batched: bool = True) -> float:
    """Seconds per video to commit `videos` videos the way the driver does: in batches of 64
    (`curation.reconcile.CommitBatch`), or, as before batching, three parts per video."""
    from curation.reconcile import CommitBatch
    from manifests.io import write_part

    batch = CommitBatch(root, 64, 30.0)
    began = time.perf_counter()
    for v in range(videos):
        video_id = f"{v:016x}"
        shots = [
            {"video_id": video_id, "shot_id": f"{video_id}_{s * 100:07d}", "shot_index": s,
             "source_path": f"/data/{video_id}.mp4", "start_frame": s * 100, "end_frame": s * 100 + 100,
             "num_frames": 100, "start_s": s * 4.0, "end_s": s * 4.0 + 4.0, "duration_s": 4.0, "start_pts": s * 100,
             "end_pts": s * 100 + 100, "time_base": "1/25", "fps": 25.0, "width": 1280, "height": 720, "rotation": 0,
             "clip_index": 0, "detector": "adaptive(threshold=3,min_scene_frames=15)", "status": "ok"}
            for s in range(SHOTS)
        ]  # fmt: skip
        clips = [{"clip_id": f"{video_id}_c000", "video_id": video_id, "clip_index": 0, "start_frame": 0,
                  "end_frame": SHOTS * 100, "decode_start_frame": 0, "decode_end_frame": SHOTS * 100, "start_s": 0.0,
                  "end_s": SHOTS * 4.0, "num_cuts": SHOTS - 1, "frames_decoded": SHOTS * 100, "status": "ok",
                  "processing_s": 1.0}]  # fmt: skip
        video = {"video_id": video_id, "source_path": f"/data/{video_id}.mp4", "status": "ok", "num_shots": SHOTS,
                 "num_frames": SHOTS * 100, "fps": 25.0, "duration_s": SHOTS * 4.0, "width": 1280, "height": 720}  # fmt: skip
        if batched:
            batch.add(video_id, {"shots": shots, "clips": clips, "videos": [video]})
            continue
        write_part(root, "shots", video_id, shots)
        write_part(root, "clips", video_id, clips)
        write_part(root, "videos", video_id, [video])
    batch.flush()
    return (time.perf_counter() - began) / videos


def timed(step) -> float:
    began = time.perf_counter()
    step()
    return time.perf_counter() - began


def embeddings_for(shots: pd.DataFrame, dim: int = 32) -> pd.DataFrame:
    """A shot_embeddings table for the miner: each video's shots near one direction, with noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    codes, videos = pd.factorize(shots["video_id"])
    centres = rng.normal(size=(len(videos), dim))
    vectors = (centres[codes] + 0.5 * rng.normal(size=(len(shots), dim))).astype(np.float16)
    return pd.DataFrame({"shot_id": shots["shot_id"], "video_id": shots["video_id"], "clip_index": 0,
                         "embedder": "synthetic", "checkpoint_hash": None, "embedding": list(vectors),
                         "status": "ok"})  # fmt: skip


def measure(root: Path, miner: bool = True) -> dict[str, float]:
    from curation.combine import mine
    from curation.config import CombineConfig, CurationConfig
    from curation.probe import completed_video_ids
    from manifests.io import check_finite, read_table

    config = CurationConfig(output=root)
    settings = CombineConfig(within="video", min_relevance=0.5)
    shots = read_table(root, "shots")
    embeddings = embeddings_for(shots) if miner else None
    return {
        "validated read_table(shots)": timed(lambda: read_table(root, "shots")),
        "plain pd.read_parquet(shots)": timed(lambda: pd.read_parquet(root / "shots.parquet")),
        "resume planning": timed(lambda: completed_video_ids(config)),
        **(
            {
                "miner": timed(lambda: mine(shots, embeddings, settings, parallel_from=10**12)),
                "miner in Ray tasks": timed(lambda: mine(shots, embeddings, settings, parallel_from=1)),
            }
            if miner
            else {}
        ),  # fmt: skip
        "training manifest check": timed(
            lambda: check_finite(read_table(root, "shots"), "shots", ["start_s", "end_s", "fps"], root)
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, nargs="+", default=[1000, 10000], help="manifest sizes in videos")
    parser.add_argument("--parts-up-to", type=int, default=10000,
                        help="measure the one-part-per-video layout only up to this many videos (it is slow)")  # fmt: skip
    args = parser.parse_args()
    import ray

    # The miner's tasks run on a local Ray, as in the job (started once, outside every timing).
    ray.init(address="local", include_dashboard=False, logging_level="ERROR")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.videos:
            root = Path(tmp) / f"m{count}"
            results[count] = {}
            if count <= args.parts_up_to:
                unbatched = write_manifest(Path(tmp) / f"p{count}", count, batched=False)
                parts = {"commit per video, one part each (before)": unbatched} | measure(Path(tmp) / f"p{count}",
                                                                                          miner=False)  # fmt: skip
                results[count] = {f"{k} (parts)" if not k.startswith("commit") else k: v for k, v in parts.items()}
            commit = write_manifest(root, count)
            results[count] |= {"commit per video": commit} | measure(root)
            from manifests.compact import compact

            results[count]["compact"] = timed(lambda root=root: compact(root))
            results[count] |= {f"{k} (compacted)": v for k, v in measure(root, miner=False).items() if "plain" not in k}
            print(f"{count} videos ({count * SHOTS} shots): "
                  + ", ".join(f"{k} {v * 1000:.2f} ms" if k.startswith("commit per video") else f"{k} {v:.2f} s"
                              for k, v in results[count].items()), flush=True)  # fmt: skip
    for count, found in results.items():
        print(
            f"{count} videos: the miner in Ray tasks takes {found['miner in Ray tasks'] / found['miner']:.2f}x "
            f"the time of the miner in one process ({int(ray.cluster_resources()['CPU'])} CPUs)"
        )
    sizes = sorted(results)
    for small, large in zip(sizes, sizes[1:]):
        growth = large / small
        print(f"growth {small} -> {large} videos ({growth:g}x), as a ratio to linear: "
              + ", ".join(f"{k} {results[large][k] / results[small][k] / (1 if k.startswith('commit per video') else growth):.2f}"
                          for k in results[small] if k in results[large]))  # fmt: skip


if __name__ == "__main__":
    main()
