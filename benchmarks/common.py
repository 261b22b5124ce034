"""Helpers the GPU benchmarks share: the CogVideoX-5B transformer shape with random weights, and timing."""

from __future__ import annotations

import time

import torch

FIVE_B = dict(num_attention_heads=48, attention_head_dim=64, num_layers=42, use_rotary_positional_embeddings=True,
              sample_height=60, sample_width=90)  # fmt: skip


def random_5b_transformer():
    """The 5B shape in bf16 on the GPU, initialised in place (no 20 GB fp32 copy on the host)."""
    from model import Mask2DiTTransformer3DModel

    with torch.device("meta"):
        model = Mask2DiTTransformer3DModel(**FIVE_B)
    model = model.to_empty(device="cuda").to(torch.bfloat16)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.02)
    return model


def cuda_seconds_per_step(step, steps: int) -> float:
    """One warm-up call, then the mean time of `steps` calls; the peak-memory counter starts after warm-up."""
    step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - began) / steps
