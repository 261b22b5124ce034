"""Encode every training scene (VAE latents) and caption (T5 / umT5) once, for the trainer to read.

    python training/precompute.py --config training/configs/sft.yaml --out out/precomputed/sft
    torchrun --nproc-per-node 8 training/precompute.py --config ... --out ...   # ranks split the work

Then train with `data.precomputed=<out>`: the VAE and text encoder stay unloaded during training. Entries are
keyed by a hash of their inputs (shot, frame window, size, encoder identity), so re-running skips
what is already there and a changed setting never reads stale latents.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import os

import torch

from training.config import load_config
from training.data import DataError, load_samples, resize_crop


def precompute(config, out: str | os.PathLike, batch_size: int = 4) -> dict:
    from manifests.frames import read_shot_frames
    from model.families import family_of
    from training.config import transformer_weights
    from training.latent_store import LatentStore, scene_key, stable_seed, text_key

    if config.data.frame_window != "middle":
        raise ValueError("precomputed latents hold one window per shot: run with data.frame_window=middle "
                         "(and train with the same setting)")  # fmt: skip
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if config.run.precision == "bf16" and device.type == "cuda" else torch.float32
    samples, report = load_samples(config.data)
    family = family_of(config.model.path, config.model.family)
    text_length = family.text_length(config.model.path, transformer_weights(config))
    encoders = family.encoders(config.model.path, device, dtype, text_length)
    store = LatentStore(out)
    scenes = {scene_key(s.content_key, config.data, encoders.identity): s for sample in samples for s in sample}
    captions = {text_key(c, encoders.identity): c for c in {"", *(s.caption for s in scenes.values())}}
    mine_scenes = [k for i, k in enumerate(sorted(scenes)) if i % world == rank and k not in store]
    mine_texts = [k for i, k in enumerate(sorted(captions)) if i % world == rank and k not in store]
    tensors = {}
    for start in range(0, len(mine_scenes), batch_size):
        keys = mine_scenes[start : start + batch_size]
        for key in keys:  # one scene at a time: scenes may differ in length (data.scene_frames=from_shots)
            scene = scenes[key]
            frames = resize_crop(read_shot_frames(scene.shot, indices=scene.frame_offsets(config.data.num_frames),
                                              crop=config.data.crop_bars),
                                 config.data.height, config.data.width)  # fmt: skip
            tensors[key] = encoders.encode_frames(torch.from_numpy(frames)[None], stable_seed(key))[0].cpu()
    for start in range(0, len(mine_texts), batch_size):
        keys = mine_texts[start : start + batch_size]
        embeddings = encoders.encode_text([captions[k] for k in keys])
        tensors.update({k: e.cpu() for k, e in zip(keys, embeddings)})
    store.write(tensors, writer=f"rank{rank:03d}-{len(list(store.folder.glob(f'index-rank{rank:03d}*')))}")
    if rank == 0:
        store.write_identity(encoders.identity, config.data.model_dump(mode="json"))
    return {"scenes": len(scenes), "captions": len(captions), "written": len(tensors), "usable_samples": report.usable}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--out", required=True, help="store folder, local or s3://bucket/prefix")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        counts = precompute(load_config(args.config, args.overrides), args.out)
    except (ValueError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"precomputed into {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
