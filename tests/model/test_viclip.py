"""Tests of `model/viclip.py`: ViCLIP (InternVid's video CLIP), with parameter names that load the
official checkpoints strictly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from manifests.sampling import sample_indices, viclip_frame_indices
from model.viclip import (
    MEAN,
    STD,
    VICLIP_B16,
    VICLIP_L14,
    ViCLIP,
    _key_mismatch,
    config_from_state_dict,
    preprocess_frames,
)
from model.weights import CheckpointError
from tests.support.viclip import TINY


def test_viclip_frames_are_picked_and_resized_as_the_official_demo():
    import cv2

    assert viclip_frame_indices(80) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert viclip_frame_indices(83) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert viclip_frame_indices(5) == [0, 0, 1, 1, 2, 3, 3, 4]
    frames = np.random.default_rng(0).integers(0, 255, (8, 180, 320, 3), dtype=np.uint8)  # 320x180 input
    ours = preprocess_frames(frames)
    expected = []
    for frame in frames:
        bgr = np.ascontiguousarray(frame[:, :, ::-1])  # the demo reads BGR with OpenCV, then flips
        resized = cv2.resize(bgr[:, :, ::-1], (224, 224))
        expected.append((resized / 255.0 - np.array(MEAN)) / np.array(STD))
    expected = torch.from_numpy(np.stack(expected).transpose(0, 3, 1, 2)).float()
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_viclip_round_trips_through_the_strict_loader(tmp_path, bpe_file, suffix):
    torch.manual_seed(0)
    model = ViCLIP(TINY).eval()
    path = tmp_path / f"viclip{suffix}"
    model.save_checkpoint(path)
    loaded = ViCLIP.from_checkpoint(path, tokenizer=bpe_file)
    assert loaded.config == TINY and loaded.checkpoint_hash
    video = preprocess_frames(np.random.default_rng(0).integers(0, 255, (8, 40, 50, 3), dtype=np.uint8), 32)[None]
    torch.testing.assert_close(loaded.video_embeddings(video), model.video_embeddings(video))
    first, _ = loaded.text_embeddings(["the man walks"])
    second, truncated = loaded.text_embeddings(["the man walks", "the man walks and the man walks and the man"])
    torch.testing.assert_close(first[0], second[0])  # deterministic, batch-independent
    assert truncated == [False, True]
    assert torch.allclose(loaded.video_embeddings(video).norm(dim=-1), torch.ones(1))


def test_official_layout_without_stored_config_is_inferred(tmp_path):
    """An official-style file ({'model': state_dict}, nothing else) loads by its tensor shapes."""
    torch.manual_seed(0)
    model = ViCLIP(VICLIP_B16).to(torch.float16)  # full-size ViT-B/16 towers, random weights
    torch.save({"model": model.state_dict()}, tmp_path / "ViClip-B16.pth")
    loaded = ViCLIP.from_checkpoint(tmp_path / "ViClip-B16.pth")
    assert loaded.config == VICLIP_B16
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.float(), b.float()), name


def test_full_size_l14_has_the_official_key_layout():
    with torch.device("meta"):
        model = ViCLIP(VICLIP_L14)
    state = model.state_dict()
    assert config_from_state_dict(state, "meta") == VICLIP_L14
    expected = {
        "temp": (),
        "vision_encoder.conv1.weight": (1024, 3, 1, 14, 14),
        "vision_encoder.positional_embedding": (257, 1024),
        "vision_encoder.temporal_positional_embedding": (1, 8, 1024),
        "vision_encoder.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "vision_encoder.transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "vision_encoder.proj": (1024, 768),
        "text_encoder.token_embedding.weight": (49408, 768),
        "text_encoder.positional_embedding": (32, 768),
        "text_encoder.transformer.resblocks.11.attn.out_proj.weight": (768, 768),
        "text_encoder.ln_final.weight": (768,),
        "text_encoder.text_projection": (768, 768),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("causal_mask" in k for k in state)  # a buffer, not a checkpoint key


def test_wrong_or_missing_keys_are_clear_errors(tmp_path):
    state = ViCLIP(TINY).state_dict()
    missing = dict(state)
    missing.pop("vision_encoder.ln_post.weight")
    torch.save({"model": missing, "config": TINY.__dict__}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="1 missing keys.*ln_post"):
        ViCLIP.from_checkpoint(tmp_path / "missing.pth")
    renamed = {k.replace("vision_encoder.", "visual."): v for k, v in state.items()}
    torch.save({"model": renamed}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="not a ViCLIP checkpoint"):
        ViCLIP.from_checkpoint(tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="not found"):
        ViCLIP.from_checkpoint(tmp_path / "nope.pth")
    assert _key_mismatch(ViCLIP(TINY), state) == ([], [])


def test_preprocessing_shape_and_normalisation():
    frames = np.full((8, 90, 160, 3), 255, dtype=np.uint8)
    frames[:, :, :, 1] = 0
    video = preprocess_frames(frames)
    assert video.shape == (8, 3, 224, 224)
    expected = [(1 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (1 - MEAN[2]) / STD[2]]
    torch.testing.assert_close(video.mean(dim=(0, 2, 3)), torch.tensor(expected), atol=1e-4, rtol=0)
    assert sample_indices(80) == [5, 15, 25, 35, 45, 55, 65, 75]
