"""Tests of `model/feature_extractors.py`: the frozen DINO and I3D backbones the metrics use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.feature_extractors import DinoEncoder, I3DFeatures, resize_center_crop
from model.weights import CheckpointError


def test_dino_gives_one_unit_cls_feature_per_frame(backbones):
    dino = DinoEncoder.from_pretrained(backbones / "dino")
    frames = np.random.default_rng(1).integers(0, 256, (3, 36, 48, 3), dtype=np.uint8)
    features = dino.image_embeddings(frames, batch_size=2)
    assert features.shape == (3, 32) and torch.allclose(features.norm(dim=-1), torch.ones(3))
    with pytest.raises(CheckpointError, match="not a local DINO folder"):
        DinoEncoder.from_pretrained(backbones / "missing")


def test_i3d_loads_torchscript_or_a_state_dict_into_its_module_weights_only(backbones, tmp_path):
    videos = np.random.default_rng(2).integers(0, 256, (2, 8, 40, 40, 3), dtype=np.uint8)
    scripted = I3DFeatures.load(backbones / "i3d.pt")
    features = scripted.features(videos, size=32)
    assert features.shape == (2, 6) and features.dtype == np.float64
    module = torch.jit.load(str(backbones / "i3d.pt"))
    plain = torch.nn.Sequential()  # a state dict needs its module; a wrong one is refused by name
    torch.save(module.state_dict(), tmp_path / "i3d_state.pt")
    with pytest.raises(CheckpointError, match="does not match the I3D module"):
        I3DFeatures.load(tmp_path / "i3d_state.pt", module=plain)
    with pytest.raises(CheckpointError, match="not TorchScript; a state dict needs the I3D module"):
        I3DFeatures.load(tmp_path / "i3d_state.pt")
    with pytest.raises(CheckpointError, match="I3D file not found"):
        I3DFeatures.load(tmp_path / "none.pt")


def test_resize_center_crop_keeps_the_centre_and_normalises():
    frames = np.zeros((1, 20, 60, 3), np.uint8)
    frames[:, :, 15:45] = 255  # a white centre between black sides, wider than the crop
    out = resize_center_crop(frames, 10, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert out.shape == (1, 3, 10, 10) and torch.allclose(out, torch.ones_like(out), atol=1e-3)
