"""Tests of `model/clip.py`: CLIP image and text embeddings from a local transformers folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.clip import ClipEncoder, clip_preprocess
from model.weights import CheckpointError


def test_clip_embeds_frames_and_texts_as_unit_vectors_with_its_weights_hash(backbones):
    clip = ClipEncoder.from_pretrained(backbones / "clip")
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    images = clip.image_embeddings(frames, batch_size=2)  # two batches, one result
    assert images.shape == (3, 16) and torch.allclose(images.norm(dim=-1), torch.ones(3))
    assert torch.allclose(images[:1], clip.image_embeddings(frames[:1]), atol=1e-6)
    texts = clip.text_embeddings(["a man walks", "a red car"])
    assert texts.shape == (2, 16) and torch.allclose(texts.norm(dim=-1), torch.ones(2))
    assert clip.checkpoint_hash and len(clip.checkpoint_hash) >= 16
    assert clip_preprocess(frames, 32).shape == (3, 3, 32, 32)  # resized, centre-cropped, normalised


def test_a_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a local CLIP folder"):
        ClipEncoder.from_pretrained(tmp_path)
