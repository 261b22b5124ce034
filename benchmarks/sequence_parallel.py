"""Per-rank activation memory under sequence parallelism, against one rank (printed as ratios).

    python benchmarks/sequence_parallel.py            # CPU, gloo, small model; 1, 2 and 4 ranks

Activation memory is measured as the bytes autograd keeps for the backward pass (every tensor
saved during one training forward, counted once per storage): the memory that grows with the
sequence and that sequence parallelism divides. On a GPU (when one is there) the peak allocated
memory of forward+backward is printed as well.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = dict(num_attention_heads=4, attention_head_dim=32, in_channels=4, out_channels=4, time_embed_dim=32,
             text_embed_dim=32, num_layers=2, sample_width=16, sample_height=16, sample_frames=9,
             max_text_seq_length=32, use_rotary_positional_embeddings=True)  # fmt: skip
SCENES, FRAMES, LATENT = 3, 4, 16  # 3 scenes x 4 latent frames x 8x8 tokens + 3 x 32 text tokens


def saved_bytes(model, inputs) -> int:
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(**inputs).sample
    out.float().pow(2).mean().backward()
    return sum(storages.values())


def worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from model.cogvideox import Mask2DiTTransformer3DModel
    from model.sequence_parallel import SequenceShard

    torch.manual_seed(0)
    model = Mask2DiTTransformer3DModel(**MODEL)
    frames = [FRAMES] * SCENES
    g = torch.Generator().manual_seed(1)
    inputs = dict(hidden_states=torch.randn(1, SCENES * FRAMES, 4, LATENT, LATENT, generator=g),
                  encoder_hidden_states=torch.randn(1, SCENES * 32, 32, generator=g), timestep=torch.tensor([500]),
                  image_rotary_emb=model.prepare_rotary_emb(frames, LATENT, LATENT), scene_frames=frames)  # fmt: skip
    if world > 1:
        model.enable_sequence_parallel(SequenceShard.from_group(None))
    results[rank] = saved_bytes(model, inputs)
    dist.destroy_process_group()


def measure(world: int) -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(worker, args=(world, port, results), nprocs=world, join=True)
    return max(results.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4], help="world sizes (default: %(default)s)")
    args = parser.parse_args()
    tokens = SCENES * (FRAMES * (LATENT // 2) ** 2 + 32)
    print(f"model: {MODEL['num_layers']} layers, {MODEL['num_attention_heads']} heads x {MODEL['attention_head_dim']}; "
          f"sequence {tokens} tokens ({SCENES} scenes)")  # fmt: skip
    base = measure(1)
    print(f"{'ranks':>5} | {'activation MiB per rank':>24} | {'ratio to 1 rank':>15} | {'ideal 1/P':>9}")
    for world in args.ranks:
        value = base if world == 1 else measure(world)
        print(f"{world:>5} | {value / 2**20:>24.2f} | {value / base:>15.2f} | {1 / world:>9.2f}")


if __name__ == "__main__":
    main()
