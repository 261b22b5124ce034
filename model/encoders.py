"""Frozen encoders of each backbone: VAE latents and text embeddings, as the backbone trains on them.

Latents come out as (N, F, C, h, w) for every backbone; `model.families` picks the class.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch


def content_hash(*parts) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def seeded_sample(posterior, seed: int, device, dtype) -> torch.Tensor:
    """A draw from the VAE's latent distribution whose noise depends only on `seed` (made on the CPU,
    so the same seed gives the same latents on every device)."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32).to(device, dtype)
    return posterior.mean + posterior.std * noise


class CogVideoXEncoders:
    """VAE + T5 from a CogVideoX-layout folder, frozen, with CogVideoX's latent scaling."""

    def __init__(self, model_path: Path, device: torch.device, dtype: torch.dtype, text_length: int):
        from diffusers import AutoencoderKLCogVideoX
        from transformers import T5EncoderModel, T5Tokenizer

        self.vae = AutoencoderKLCogVideoX.from_pretrained(model_path, subfolder="vae", dtype=dtype).to(device).eval()
        self.text_encoder = (
            T5EncoderModel.from_pretrained(model_path, subfolder="text_encoder", dtype=dtype).to(device).eval()
        )
        self.tokenizer = T5Tokenizer.from_pretrained(model_path, subfolder="tokenizer")
        self.device, self.dtype, self.text_length = device, dtype, text_length
        self.scaling = self.vae.config.scaling_factor
        self.identity = content_hash(model_path.resolve(), text_length, dtype)
        self.vae.enable_slicing()  # one video at a time through the VAE: same latents, far less memory
        for module in (self.vae, self.text_encoder):
            module.requires_grad_(False)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """(N, T, H, W, 3) uint8 -> latents (N, F, C, h, w), sampled with a seeded generator."""
        video = frames.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype) / 127.5 - 1.0  # (N, 3, T, H, W)
        latents = seeded_sample(self.vae.encode(video).latent_dist, seed, self.device, self.dtype)
        return (latents * self.scaling).permute(0, 2, 1, 3, 4).contiguous()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> T5 embeddings (N, text_length, D), padded/truncated like CogVideoX."""
        tokens = self.tokenizer(captions, padding="max_length", max_length=self.text_length, truncation=True,
                                add_special_tokens=True, return_tensors="pt")  # fmt: skip
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(self.dtype)


class WanEncoders:
    """Wan's VAE (latents normalised by its mean and std) and umT5, frozen. Prompts are encoded and
    padded exactly as Wan's pipeline encodes one prompt (its own code is called, not copied)."""

    def __init__(self, model_path: Path, device: torch.device, dtype: torch.dtype, text_length: int):
        from diffusers import AutoencoderKLWan
        from transformers import AutoTokenizer, UMT5EncoderModel

        # Wan runs its VAE in fp32 (its pipelines load it so); latents are cast afterwards.
        self.vae = AutoencoderKLWan.from_pretrained(model_path, subfolder="vae", dtype=torch.float32)
        self.vae = self.vae.to(device).eval()
        self.text_encoder = UMT5EncoderModel.from_pretrained(model_path, subfolder="text_encoder", dtype=dtype)
        self.text_encoder = self.text_encoder.to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, subfolder="tokenizer")
        self.device, self.dtype, self.text_length = device, dtype, text_length
        self.identity = content_hash("wan", model_path.resolve(), text_length, dtype)
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        self.mean = torch.tensor(self.vae.config.latents_mean, device=device).view(shape)
        self.std = torch.tensor(self.vae.config.latents_std, device=device).view(shape)
        for module in (self.vae, self.text_encoder):
            module.requires_grad_(False)

    @torch.no_grad()
    def encode_frames(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """(N, T, H, W, 3) uint8 -> normalised latents (N, F, C, h, w), sampled with a seeded generator."""
        video = frames.to(self.device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
        parts = [seeded_sample(self.vae.encode(v[None]).latent_dist, seed + i, self.device, torch.float32)
                 for i, v in enumerate(video)]  # one video at a time, as the VAE's slicing would  # fmt: skip
        latents = (torch.cat(parts) - self.mean) / self.std
        return latents.permute(0, 2, 1, 3, 4).to(self.dtype).contiguous()

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """Captions -> umT5 embeddings (N, text_length, D): the prompt's tokens, then zeros."""
        from diffusers.pipelines.wan.pipeline_wan import WanPipeline

        return WanPipeline._get_t5_prompt_embeds(self, captions, 1, self.text_length, self.device, self.dtype)
