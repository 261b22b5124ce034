"""A tiny CogVideoX-family Mask²DiT transformer with random weights, and the scene layouts the model tests use."""

from __future__ import annotations

import torch

from model import Mask2DiTTransformer3DModel

TINY = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
    text_embed_dim=24, num_layers=2, sample_width=8, sample_height=8, sample_frames=9,
    max_text_seq_length=6, use_rotary_positional_embeddings=True,
)  # fmt: skip


LAYOUTS = [
    ((6,), (16,)),
    ((6, 6), (32, 32)),
    ((6, 3), (48, 16)),  # unequal text and video lengths
    ((4, 4, 4, 4), (16, 32, 16, 48)),
    ((5, 0, 2), (16, 16, 32)),  # a scene without text
]


def tiny_model(seed: int = 0, **overrides) -> Mask2DiTTransformer3DModel:
    torch.manual_seed(seed)
    model = Mask2DiTTransformer3DModel(**(TINY | overrides))
    # Random (not zero-initialised) modulation so every path is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()
