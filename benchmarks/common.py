"""Helpers the GPU benchmarks share: the CogVideoX-5B and Wan2.1-1.3B transformer shapes with random weights, and timing."""

from __future__ import annotations

import time

import torch

FIVE_B = dict(num_attention_heads=48, attention_head_dim=64, num_layers=42, use_rotary_positional_embeddings=True,
              sample_height=60, sample_width=90)  # fmt: skip


WAN_1_3B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096,
                freq_dim=256, in_channels=16, out_channels=16)  # fmt: skip


def random_5b_transformer():
    """The CogVideoX-5B shape in bf16 on the GPU."""
    from model import Mask2DiTTransformer3DModel

    return random_on_gpu(Mask2DiTTransformer3DModel, FIVE_B)


def random_wan13b_transformer():
    """Wan2.1-T2V-1.3B's transformer shape in bf16 on the GPU."""
    from model.wan import Mask2DiTWanTransformer3DModel

    return random_on_gpu(Mask2DiTWanTransformer3DModel, WAN_1_3B)


def random_on_gpu(model_class, config: dict):
    """A model in bf16 on the GPU, initialised in place (no fp32 copy on the host)."""
    with torch.device("meta"):
        model = model_class(**config)
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
