"""Tests of `model/wan_pipeline.py`: multi-scene generation and expansion on Wan2.1/Wan2.2 folders
in the official layouts, and Wan2.2 A14B's two experts switching at the boundary."""

from __future__ import annotations

import json

import pytest
import torch

from model.wan import Mask2DiTWanTransformer3DModel


@pytest.mark.parametrize("layout", ["wan2.1", "wan2.2-a14b", "wan2.2-ti2v"])
def test_official_folder_layouts_load_generate_and_expand(tmp_path, layout):
    from diffusers import WanPipeline

    from model.families import family_of
    from model.tiny import TINY_WAN_TEXT, build_tiny_wan
    from model.wan_pipeline import Mask2DiTWanPipeline

    folder = build_tiny_wan(tmp_path / layout, layout=layout)
    family = family_of(folder)
    assert family.name == "wan"
    pipe = Mask2DiTWanPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    experts = [m for m in (pipe.transformer, pipe.transformer_2) if m is not None]
    assert all(isinstance(m, Mask2DiTWanTransformer3DModel) for m in experts)
    assert len(experts) == (2 if layout == "wan2.2-a14b" else 1)
    size = 16 * family.size_multiple(folder) // 8  # 32 px (8x VAE) or 64 px (Wan2.2's 16x VAE)
    kwargs = dict(height=size, width=size, num_frames=9, num_inference_steps=3, max_sequence_length=TINY_WAN_TEXT)
    story = pipe(["a man walks", "a dog runs"], **kwargs)
    assert story.latents.shape == (1, 6, 4, 4, 4) and [v.shape for v in story.videos] == [(1, 9, size, size, 3)] * 2
    more = pipe.expand(story, ["the dog sleeps"], output_type="latent", **kwargs)
    assert torch.equal(more.latents[:, :6], story.latents)  # context scenes stay as they were
    assert more.scene_frames == [3, 3, 3]
    # The folder stays a stock Wan folder: diffusers' own pipeline opens it.
    stock = WanPipeline.from_pretrained(folder)
    assert type(stock.transformer or stock.transformer_2).__name__ == "WanTransformer3DModel"
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "WanPipeline"


def test_a14b_generation_switches_experts_at_the_boundary(tmp_path, monkeypatch):
    from model.tiny import TINY_WAN_TEXT, build_tiny_wan
    from model.wan_pipeline import Mask2DiTWanPipeline

    pipe = Mask2DiTWanPipeline.from_pretrained(build_tiny_wan(tmp_path / "a14b", layout="wan2.2-a14b"))
    pipe.set_progress_bar_config(disable=True)
    seen = []
    for name in ("transformer", "transformer_2"):
        model = getattr(pipe, name)
        original = model.forward

        def spy(*args, _name=name, _original=original, **kwargs):
            seen.append((_name, float(kwargs["timestep"][0])))
            return _original(*args, **kwargs)

        monkeypatch.setattr(model, "forward", spy)
    pipe(["a man walks"], height=32, width=32, num_frames=5, num_inference_steps=6, output_type="latent",
         max_sequence_length=TINY_WAN_TEXT)  # fmt: skip
    boundary = 0.875 * 1000
    assert seen and all((name == "transformer") == (t >= boundary) for name, t in seen), seen
    assert {name for name, _ in seen} == {"transformer", "transformer_2"}
