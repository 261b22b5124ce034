"""Tests of `model/aesthetic.py`: LAION's aesthetic predictor layout, loaded weights-only from .pth
or .safetensors, scoring CLIP image embeddings of frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.aesthetic import AestheticMLP, AestheticScorer, load_mlp
from model.clip import ClipEncoder
from model.weights import CheckpointError


def _published_layout(path, width: int):
    torch.manual_seed(0)
    mlp = AestheticMLP(width)
    torch.save(mlp.state_dict(), path)  # as the published .pth: the bare state dict
    return mlp


def test_the_published_layout_loads_from_pth_and_safetensors_and_scores_clip_embeddings(backbones, tmp_path):
    from safetensors.torch import save_file

    mlp = _published_layout(tmp_path / "aesthetic.pth", 16)  # the tiny CLIP's projection width
    save_file(mlp.state_dict(), tmp_path / "aesthetic.safetensors")
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    expected = mlp.eval()(ClipEncoder.from_pretrained(backbones / "clip").image_embeddings(frames)).squeeze(-1)
    for name in ("aesthetic.pth", "aesthetic.safetensors"):
        scorer = AestheticScorer.load(tmp_path / name, backbones / "clip")
        np.testing.assert_allclose(scorer.score(frames), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert load_mlp(tmp_path / "aesthetic.pth").layers[0].in_features == 16


def test_a_wrong_layout_or_width_is_a_clear_error(backbones, tmp_path):
    torch.save({"fc.weight": torch.zeros(1, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not LAION's aesthetic predictor layout"):
        load_mlp(tmp_path / "other.pth")
    _published_layout(tmp_path / "l14.pth", 768)
    with pytest.raises(CheckpointError, match="needs CLIP ViT-L/14"):
        AestheticScorer.load(tmp_path / "l14.pth", backbones / "clip")
    with pytest.raises(CheckpointError, match="no such"):
        load_mlp(tmp_path / "missing.pth")
