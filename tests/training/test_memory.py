"""Tests of `training/memory.py`: the memory estimate printed at the start of a run counts LoRA's
frozen base without optimizer state, grows with the token count, and says which GPU sizes fit."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from tests.support.training import CONFIG
from training.config import load_config
from training.memory import GIB, estimate, memory_plan


def _transformer(width=3072, blocks=40, heads=24):
    """A stand-in with a 14B-like parameter count (no weights allocated)."""
    model = torch.nn.Module()
    model.base = torch.nn.Parameter(torch.empty(14_000_000_000, device="meta"), requires_grad=False)
    model.adapter = torch.nn.Parameter(torch.empty(150_000_000, device="meta"))
    model.config = SimpleNamespace(num_attention_heads=heads, attention_head_dim=width // heads, num_layers=blocks)
    return model


def _config(*overrides):
    return load_config(CONFIG, ["model.path=unused", "data.manifest=unused", f"run.output={Path('unused')}",
                                "run.precision=bf16", "data.height=480", "data.width=832", "data.num_frames=81",
                                "data.scenes=3", "model.lora.rank=32", *overrides])  # fmt: skip


def test_lora_counts_the_frozen_base_once_and_activations_follow_the_tokens():
    family = SimpleNamespace(name="wan")
    lora = estimate(_transformer(), _config("model.gradient_checkpointing=true"), family)
    assert lora.weights == (14_000_000_000 + 150_000_000) * 2  # bf16, frozen or not
    assert lora.trainable == 150_000_000 * (2 + 12)  # gradient + fp32 master + two AdamW moments
    assert lora.tokens == 21 * 3 * 30 * 52 + 3 * 512
    small = estimate(_transformer(), _config("model.gradient_checkpointing=true", "data.num_frames=41"), family)
    assert small.activations < lora.activations
    unchecked = estimate(_transformer(), _config("model.gradient_checkpointing=false"), family)
    assert unchecked.activations > 5 * lora.activations
    plan = memory_plan(_transformer(), _config("model.gradient_checkpointing=true"), family)
    assert "LoRA rank 32" in plan and "24 GB: no" in plan and "141 GB: fits" in plan
    assert 40 < lora.total / GIB < 70  # a 14B base in bf16 and the activations of 3 x 81 frames of 480p
    assert "80 GB: fits" in plan and "48 GB: no" in plan
