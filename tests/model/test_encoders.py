"""Tests of `model/encoders.py`: each backbone's frozen VAE and text encoder, as training uses them."""

from __future__ import annotations

import torch

from model.encoders import CogVideoXEncoders, WanEncoders, seeded_sample
from model.tiny import TINY_WAN_TEXT, build_tiny_wan


def _video(frames: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, frames, size, size, 3), generator=generator, dtype=torch.uint8)


def test_cogvideox_latents_are_seeded_scaled_and_frame_first(tiny_model_dir):
    encoders = CogVideoXEncoders(tiny_model_dir, torch.device("cpu"), torch.float32, text_length=12)
    video = _video(9)
    latents = encoders.encode_frames(video, seed=3)
    assert latents.shape[:2] == (2, 3) and latents.shape[2] == encoders.vae.config.latent_channels  # (N, F, C, h, w)
    assert torch.equal(latents, encoders.encode_frames(video, seed=3))  # the same seed, the same sample
    assert not torch.equal(latents, encoders.encode_frames(video, seed=4))
    text = encoders.encode_text(["Actor1 walks.", "A street at night, in the rain."])
    assert text.shape[:2] == (2, 12) and not any(p.requires_grad for p in encoders.text_encoder.parameters())


def test_wan_latents_are_normalised_per_channel_and_prompts_pad_with_zeros(tmp_path):
    folder = build_tiny_wan(tmp_path / "wan")
    encoders = WanEncoders(folder, torch.device("cpu"), torch.float32, text_length=TINY_WAN_TEXT)
    latents = encoders.encode_frames(_video(9), seed=1)
    assert latents.shape[:3] == (2, 3, encoders.vae.config.z_dim)
    # The second video, sampled with seed + 1 and normalised by the VAE's per-channel mean and std.
    posterior = encoders.vae.encode(_video(9)[1:].permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0).latent_dist
    expected = (seeded_sample(posterior, 2, torch.device("cpu"), torch.float32) - encoders.mean) / encoders.std
    assert torch.allclose(latents[1:], expected.permute(0, 2, 1, 3, 4), atol=1e-5)
    text = encoders.encode_text(["Actor1 walks."])
    assert text.shape[:2] == (1, TINY_WAN_TEXT) and torch.count_nonzero(text[0, -1]) == 0  # zeros after the prompt
