"""Run under torchrun by tests/test_sequence_parallel.py: one rank of a sequence-parallel group.

    python -m torch.distributed.run --nproc-per-node P tests/support/sp_worker.py model|generate|wan OUT_DIR

With SP_DEVICE=cuda (model and wan checks), each rank runs on its own GPU over NCCL. Every rank computes the reference without sequence parallelism, then the same with it, and writes
the largest differences to OUT_DIR/rank{R}.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.cogvideox import Mask2DiTTransformer3DModel  # noqa: E402
from model.sequence_parallel import SequenceShard  # noqa: E402

TINY4 = dict(
    num_attention_heads=4, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
    text_embed_dim=24, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, max_text_seq_length=6,
    use_rotary_positional_embeddings=True,
)  # fmt: skip


# LOCAL_RANK is set by torchrun: one GPU per rank.
DEVICE = (torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if os.environ.get("SP_DEVICE") == "cuda"
          else torch.device("cpu"))  # fmt: skip


def to_device(inputs: dict) -> dict:
    """The check's inputs on this rank's device (tensors, and tuples of them such as RoPE tables)."""
    moved = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            value = value.to(DEVICE)
        elif isinstance(value, tuple):
            value = tuple(x.to(DEVICE) for x in value)
        moved[key] = value
    return moved


def largest(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def sharded_against_one_rank(model, inputs: dict, weight: torch.Tensor, shard: SequenceShard) -> dict:
    """Largest differences of output, loss and every gradient: sharded over `shard` against one rank."""
    params = [p for p in model.parameters() if p.requires_grad]

    def run():
        out = model(**inputs).sample
        loss = (out * weight).pow(2).mean()
        return out, loss, torch.autograd.grad(loss, params)

    out_ref, loss_ref, grads_ref = run()
    model.enable_sequence_parallel(shard)
    out, loss, grads = run()
    # Each rank holds its tokens' share of the gradient, times P: their mean is the full gradient,
    # as DeepSpeed/DDP average it over ranks.
    mean = []
    for grad in grads:
        grad = grad.clone()
        dist.all_reduce(grad, group=shard.group)
        mean.append(grad / shard.size)
    return {
        "output": largest(out, out_ref), "loss": abs(loss.item() - loss_ref.item()),
        "grad": max(largest(a, b) for a, b in zip(mean, grads_ref)),
        "grad_scale": max(float(b.abs().max()) for b in grads_ref),
    }  # fmt: skip


def model_check(shard: SequenceShard) -> dict:
    result = {}
    for backend in ("segmented", "dense"):
        torch.manual_seed(0)
        model = Mask2DiTTransformer3DModel(**(TINY4 | {"attention_backend": backend}))
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        scene_frames, text_lengths = [2, 3, 1], [6, 4, 5]  # unequal scenes and texts
        g = torch.Generator().manual_seed(1)
        inputs = dict(
            hidden_states=torch.randn(2, 6, 4, 8, 8, generator=g), encoder_hidden_states=torch.randn(2, 15, 24, generator=g),
            timestep=torch.tensor([900, 250]), image_rotary_emb=model.prepare_rotary_emb(scene_frames, 8, 8),
            scene_frames=scene_frames, text_lengths=text_lengths,
            clean_scenes=torch.tensor([[True, False, False], [False, False, False]]),
        )  # fmt: skip
        weight = torch.randn(2, 6, 4, 8, 8, generator=g).to(DEVICE)
        result[backend] = sharded_against_one_rank(model.to(DEVICE), to_device(inputs), weight, shard)
    try:
        Mask2DiTTransformer3DModel(**(TINY4 | {"num_attention_heads": 3})).enable_sequence_parallel(shard)
        result["indivisible_heads"] = "accepted"
    except ValueError as err:
        result["indivisible_heads"] = str(err)
    return result


def generate_check(shard: SequenceShard, out_dir: Path) -> dict:
    from model.cogvideox_pipeline import Mask2DiTPipeline
    from model.tiny import TINY_SIZE, build_tiny_model

    folder = out_dir / "model"
    if shard.rank == 0:
        build_tiny_model(folder, transformer_overrides={"num_attention_heads": 4, "attention_head_dim": 16})
    dist.barrier()
    pipe = Mask2DiTPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=2, seed=3, output_type="latent", **TINY_SIZE)
    reference = pipe(["a man walks", "a woman sits", "a dog runs"], **kwargs)
    expanded_reference = pipe.expand(reference, ["a cat sleeps"], **kwargs)
    pipe.transformer.enable_sequence_parallel(shard)
    sharded = pipe(["a man walks", "a woman sits", "a dog runs"], **kwargs)
    expanded = pipe.expand(sharded, ["a cat sleeps"], **kwargs)
    return {"latents": largest(sharded.latents, reference.latents),
            "expanded": largest(expanded.latents, expanded_reference.latents)}  # fmt: skip


def wan_check(shard: SequenceShard, out_dir: Path) -> dict:
    """The Wan transformer (full and sparse self-attention, both backends) and its pipeline, sharded."""
    from model.tiny import TINY_WAN_TEXT, build_tiny_wan
    from model.wan import Mask2DiTWanTransformer3DModel
    from model.wan_pipeline import Mask2DiTWanPipeline

    result = {}
    config = dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=12, in_channels=4, out_channels=4,
                  text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=64)  # fmt: skip
    for attention in ("full", "sparse"):
        for backend in ("segmented", "dense"):
            torch.manual_seed(0)
            model = Mask2DiTWanTransformer3DModel(**config, scene_self_attention=attention, sparse_tokens=5,
                                                  attention_backend=backend)  # fmt: skip
            g = torch.Generator().manual_seed(1)
            inputs = dict(hidden_states=torch.randn(2, 4, 6, 4, 6, generator=g), timestep=torch.tensor([900.0, 250.0]),
                          encoder_hidden_states=torch.randn(2, 3 + 12, 16, generator=g), scene_frames=[2, 3, 1],
                          scene_text=[5, 3, 4], global_text=3,
                          clean_scenes=torch.tensor([[True, False, False], [False, False, False]]))  # fmt: skip
            weight = torch.randn(2, 4, 6, 4, 6, generator=g)
            result[f"{attention}-{backend}"] = sharded_against_one_rank(model.to(DEVICE), to_device(inputs),
                                                                        weight.to(DEVICE), shard)  # fmt: skip
    if DEVICE.type == "cuda":  # the pipelines' sharding is device-independent; their CPU test covers it
        return result
    folder = out_dir / "wan"
    if shard.rank == 0:
        build_tiny_wan(folder, transformer_overrides={"num_attention_heads": 4})
    dist.barrier()
    pipe = Mask2DiTWanPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    kwargs = dict(num_inference_steps=2, seed=3, output_type="latent", height=32, width=32, num_frames=9,
                  max_sequence_length=TINY_WAN_TEXT)  # fmt: skip
    reference = pipe(["a man walks", "a woman sits", "a dog runs"], **kwargs)
    expanded_reference = pipe.expand(reference, ["a cat sleeps"], **kwargs)
    pipe.transformer.enable_sequence_parallel(shard)
    sharded = pipe(["a man walks", "a woman sits", "a dog runs"], **kwargs)
    expanded = pipe.expand(sharded, ["a cat sleeps"], **kwargs)
    result["latents"] = largest(sharded.latents, reference.latents)
    result["expanded"] = largest(expanded.latents, expanded_reference.latents)
    return result


def main() -> None:
    mode, out_dir = sys.argv[1], Path(sys.argv[2])
    if DEVICE.type == "cuda":
        torch.cuda.set_device(DEVICE)
    dist.init_process_group("nccl" if DEVICE.type == "cuda" else "gloo")
    shard = SequenceShard.from_group(None)
    checks = {"model": lambda: model_check(shard), "generate": lambda: generate_check(shard, out_dir),
              "wan": lambda: wan_check(shard, out_dir)}  # fmt: skip
    result = checks[mode]()
    (out_dir / f"rank{shard.rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
