"""Tests of `model/cogvideox_pipeline.py`: multi-scene generation with Mask²DiT: N prompts in one pass, and
auto-regressive scene expansion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.cogvideox_pipeline import Mask2DiTPipeline
from model.tiny import TINY_SIZE


def spy_negatives(pipe, monkeypatch) -> list[list[str]]:
    seen = []
    original = pipe.encode_scenes

    def encode_scenes(prompts, negative_prompts, guidance, device, dtype, *rest):
        seen.append(list(negative_prompts))
        return original(prompts, negative_prompts, guidance, device, dtype, *rest)

    monkeypatch.setattr(pipe, "encode_scenes", encode_scenes)
    return seen


@pytest.fixture(scope="session")
def pipe(tiny_model_dir):
    pipe = Mask2DiTPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_expansion_gives_every_scene_the_negative_prompt(pipe, monkeypatch):
    from model.tiny import TINY_SIZE

    kwargs = dict(num_inference_steps=1, seed=3, output_type="latent", **TINY_SIZE)
    base = pipe(["a man walks", "a woman sits"], negative_prompts="blurry", **kwargs)
    assert base.negative_prompts == ["blurry", "blurry"]
    seen = spy_negatives(pipe, monkeypatch)
    pipe.expand(base, ["a dog runs"], negative_prompts="low quality", **kwargs)
    assert seen[-1] == ["low quality"] * 3  # context scenes too, as the official unconditional branch
    # Per-scene negatives: context scenes keep the ones they were generated with.
    story = pipe.expand(base, ["a dog runs", "a cat sits"], negative_prompts=["dark", "noisy"], **kwargs)
    assert seen[-2:] == [["blurry", "blurry", "dark"], ["blurry", "dark", "noisy"]]
    assert story.negative_prompts == ["blurry", "blurry", "dark", "noisy"]


def test_context_from_video_is_noised_at_t0_like_the_official_pipeline(pipe):
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    latents = pipe.encode_video(frames, seed=5)
    torch.testing.assert_close(latents, pipe.encode_video(frames, seed=5), atol=0, rtol=0)  # seeded
    generator = torch.Generator().manual_seed(5)
    video = torch.from_numpy(frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
    clean = pipe.vae.encode(video).latent_dist.sample(generator=generator) * pipe.vae.config.scaling_factor
    clean = clean.permute(0, 2, 1, 3, 4)
    noise = torch.randn(clean.shape, generator=generator)
    alpha = pipe.scheduler.alphas_cumprod[0]
    torch.testing.assert_close(latents, alpha.sqrt() * clean + (1 - alpha).sqrt() * noise)
    assert not torch.equal(latents, clean)


def test_given_initial_noise_replaces_the_per_scene_seeds(pipe):
    from model.tiny import TINY_SIZE

    kwargs = dict(num_inference_steps=1, output_type="latent", **TINY_SIZE)
    seeded = pipe(["a man walks", "a woman sits"], seed=3, **kwargs)
    noise = torch.cat([pipe.scene_noise(s, 3, 32, 32, "cpu", torch.float32) for s in (3, 4)], dim=1)
    given = pipe(["a man walks", "a woman sits"], latents=noise / pipe.scheduler.init_noise_sigma, **kwargs)
    torch.testing.assert_close(given.latents, seeded.latents)
    with pytest.raises(ValueError, match="this call needs"):
        pipe(["a man walks"], latents=noise, **kwargs)


def test_expansion_keeps_context_and_composes(pipe):
    base = pipe(["a man walks", "a woman sits"], num_inference_steps=2, seed=7, output_type="latent", **TINY_SIZE)
    kwargs = dict(num_inference_steps=2, seed=7, output_type="latent", **TINY_SIZE)
    once = pipe.expand(base, ["a dog runs", "a cat sits"], **kwargs)
    twice = pipe.expand(pipe.expand(base, ["a dog runs"], **kwargs), ["a cat sits"], **kwargs)
    assert once.scene_frames == [3, 3, 3, 3] and once.seeds == [7, 8, 9, 10]
    assert torch.equal(once.latents[:, :6], base.latents)  # context untouched
    assert torch.equal(once.latents, twice.latents)
    assert not torch.equal(once.latents[:, 6:9], once.latents[:, 9:])
    # A different prompt for the new scene changes only the new scene.
    other = pipe.expand(base, ["a red car at night"], **kwargs)
    assert torch.equal(other.latents[:, :6], base.latents) and not torch.equal(other.latents, once.latents[:, :9])
