"""CLIP image/text embeddings from a local Hugging Face CLIP folder (no download, no torchvision).

    clip = ClipEncoder.from_pretrained("/models/clip-vit-large-patch14")
    images = clip.image_embeddings(frames)       # (N, H, W, 3) uint8 -> (N, D), L2-normalised
    texts = clip.text_embeddings(["a red car"])  # (N, D), L2-normalised

Preprocessing is CLIP's: bicubic resize of the short side to the model's size, centre crop, OpenAI
mean/std, done in torch so the optional torchvision package is never needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, size, size): CLIP's resize, centre crop and normalisation."""
    from model.feature_extractors import resize_center_crop

    return resize_center_crop(frames, size, CLIP_MEAN, CLIP_STD)


class ClipEncoder:
    def __init__(self, model, tokenizer=None, checkpoint_hash: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.checkpoint_hash = checkpoint_hash
        self.image_size = model.config.vision_config.image_size

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None, dtype=None) -> ClipEncoder:
        from transformers import CLIPModel, CLIPTokenizer

        from model.weights import CheckpointError, file_hash

        path = Path(path)
        if not (path / "config.json").is_file():
            raise CheckpointError(
                f"{path}: not a local CLIP folder (needs config.json and the weights, as saved by transformers)"
            )
        model = CLIPModel.from_pretrained(path, dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(path) if (path / "vocab.json").is_file() else None
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        encoder = cls(model.to(device or "cpu"), tokenizer, file_hash(weights[0]) if weights else None)
        return encoder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray, batch_size: int = 64) -> torch.Tensor:
        outputs = []
        for start in range(0, len(frames), batch_size):
            pixels = clip_preprocess(frames[start : start + batch_size], self.image_size)
            features = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            features = getattr(features, "pooler_output", features)
            outputs.append(F.normalize(features.float(), dim=-1).cpu())
        return torch.cat(outputs)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this CLIP folder has no tokenizer files (vocab.json, merges.txt)")
        context = self.model.config.text_config.max_position_embeddings  # 77 for CLIP; prompts longer are cut
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=context, return_tensors="pt").to(
            self.device
        )
        features = self.model.get_text_features(**tokens)
        features = getattr(features, "pooler_output", features)
        return F.normalize(features.float(), dim=-1).cpu()
