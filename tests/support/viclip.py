"""The tiny ViCLIP configuration the embedding and tokenizer tests build models from."""

from __future__ import annotations

from model.viclip import (
    ViCLIPConfig,
)

TINY = ViCLIPConfig(image_size=32, patch_size=8, num_frames=8, vision_width=64, vision_layers=2, vision_heads=64 // 64,
                    embed_dim=32, text_width=64, text_layers=2, text_heads=1, context_length=8, vocab_size=525)  # fmt: skip
