"""The Wan backbone: the dual mask on diffusers' WanTransformer3DModel, checked against an independent
oracle (the *stock* model with dense boolean masks in its processors and per-token timesteps),
RoPE schemes, official folder layouts, the flow-matching objective and the whole tiny chain."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_wan import WanTransformer3DModel

from model.layout import WanSceneLayout
from model.wan import Mask2DiTWanTransformer3DModel, apply_rotary

CONFIG = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
              text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, rope_max_seq_len=64)  # fmt: skip


def pair(**overrides):
    """A stock Wan model and ours with the same (perturbed) weights."""
    torch.manual_seed(0)
    stock = WanTransformer3DModel(**(CONFIG | overrides)).eval()
    with torch.no_grad():
        for p in stock.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ours = Mask2DiTWanTransformer3DModel(**(CONFIG | overrides)).eval()
    ours.load_state_dict(stock.state_dict())
    return stock, ours


class DenseMaskProcessor:
    """The oracle's attention: Wan's projections, norms and RoPE, then SDPA with a boolean mask."""

    def __init__(self, mask: torch.Tensor):
        self.mask = mask

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
        k = attn.norm_k(attn.to_k(context)).unflatten(2, (attn.heads, -1))
        v = attn.to_v(context).unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            q, k = apply_rotary(q, *rotary_emb), apply_rotary(k, *rotary_emb)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=self.mask
        )
        return attn.to_out[0](out.transpose(1, 2).flatten(2, 3))


def oracle(stock, layout: WanSceneLayout, hidden, timestep, text, clean: list[int]):
    """The stock model with the dual mask as dense boolean masks and clean scenes as per-token t=0."""
    for block in stock.blocks:
        block.attn1.set_processor(DenseMaskProcessor(layout.dense_self_mask()))
        block.attn2.set_processor(DenseMaskProcessor(layout.dense_cross_mask()))
    scene = torch.zeros(layout.num_scenes, dtype=torch.bool)
    scene[clean] = True
    per_token = torch.where(scene.repeat_interleave(torch.tensor(layout.video_lengths))[None], 0.0, timestep[:, None])
    return stock(hidden, per_token, text).sample


def test_without_scenes_and_with_one_scene_it_is_stock_wan():
    stock, ours = pair()
    hidden, t, text = torch.randn(2, 4, 5, 4, 6), torch.tensor([500.0, 30.0]), torch.randn(2, 7, 16)
    with torch.no_grad():
        reference = stock(hidden, t, text).sample
        assert (ours(hidden, t, text).sample - reference).abs().max() < 1e-5
        one = ours(hidden, t, text, scene_frames=[5], scene_text=[7], global_text=0).sample
        assert (one - reference).abs().max() < 1e-5
        # Wan2.2 TI2V's per-token timesteps pass through unchanged.
        per_token = torch.rand(2, 5 * 2 * 3) * 1000
        assert (ours(hidden, per_token, text).sample - stock(hidden, per_token, text).sample).abs().max() < 1e-5


@pytest.mark.parametrize("attention", ["full", "sparse"])
@pytest.mark.parametrize("global_text,clean", [(0, []), (3, []), (0, [0, 1]), (3, [1])])
def test_scenes_equal_the_dense_mask_oracle_in_forward_and_gradients(attention, global_text, clean):
    stock, ours = pair()
    ours.set_scene_attention(attention, sparse_tokens=4)
    scene_frames, scene_text = [2, 3, 1], [4, 2, 5]  # unequal scenes and texts; 6 tokens per frame
    layout = ours.scene_layout(scene_frames, 4, 6, scene_text, global_text)
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, 4, 6, 4, 6, generator=g)
    timestep = torch.tensor([700.0, 120.0])
    text = torch.randn(2, global_text + sum(scene_text), 16, generator=g, requires_grad=True)
    weight = torch.randn(2, 4, 6, 4, 6, generator=g)
    expected = oracle(stock, layout, hidden, timestep, text, clean)
    expected_grads = torch.autograd.grad((expected * weight).sum(), [text, *stock.parameters()])
    got = ours(hidden, timestep, text, scene_frames=scene_frames, scene_text=scene_text, global_text=global_text,
               clean_scenes=clean or None).sample  # fmt: skip
    grads = torch.autograd.grad((got * weight).sum(), [text, *ours.parameters()], allow_unused=True)
    assert (got - expected).abs().max() < 1e-5
    for a, b in zip(grads, expected_grads):
        assert (a - b).abs().max() < 1e-5 * max(1.0, float(b.abs().max()))


def test_the_mask_is_real_each_scene_sees_only_its_text_and_sparse_only_first_tokens():
    """Semantics without the layout's own masks: in one layer, text reaches video only through
    cross-attention, so what a scene's output depends on shows the rule."""
    _, ours = pair(num_layers=1)
    g = torch.Generator().manual_seed(3)
    hidden, t, text = (
        torch.randn(1, 4, 3, 4, 6, generator=g),
        torch.tensor([500.0]),
        torch.randn(1, 2 + 6, 16, generator=g),
    )
    kwargs = dict(scene_frames=[1, 1, 1], scene_text=[2, 2, 2], global_text=2)  # 6 tokens per scene

    def out(hidden=hidden, text=text):
        with torch.no_grad():
            return ours(hidden, t, text, **kwargs).sample

    base = out()
    other_text = text.clone()
    other_text[:, 6:] += 1.0  # scene 2's own text
    changed = out(text=other_text)
    assert torch.equal(changed[:, :, :2], base[:, :, :2]) and (changed[:, :, 2] - base[:, :, 2]).abs().max() > 1e-3
    global_changed = text.clone()
    global_changed[:, :2] += 1.0  # the global caption reaches every scene
    assert all((out(text=global_changed)[:, :, i] - base[:, :, i]).abs().max() > 1e-3 for i in range(3))
    late = hidden.clone()
    # Scene 2's tokens after its first two: tokens are 2x2 latent patches in (row, column) order, so
    # tokens 0 and 1 are latent rows 0-1, columns 0-3.
    late[:, :, 2, 2:, :] += 1.0
    late[:, :, 2, :2, 4:] += 1.0
    assert (out(hidden=late)[:, :, 0] - base[:, :, 0]).abs().max() > 1e-3  # full: scene 0 sees all video
    ours.set_scene_attention("sparse", sparse_tokens=2)
    base = out()
    assert torch.equal(out(hidden=late)[:, :, 0], base[:, :, 0])  # sparse: only the first 2 tokens of scene 2
    first = hidden.clone()
    first[:, :, 2, 0, 3] += 1.0  # inside scene 2's second token
    assert (out(hidden=first)[:, :, 0] - base[:, :, 0]).abs().max() > 1e-3
    ours.set_scene_attention("full")
    assert ours.config.scene_self_attention == "full"


def test_dense_masks_by_hand():
    layout = WanSceneLayout((3, 2), (1, 2), global_text=1, sparse_tokens=1)
    assert layout.dense_cross_mask().int().tolist() == [[1, 1, 0, 0]] * 3 + [[1, 0, 1, 1]] * 2
    assert layout.dense_self_mask().int().tolist() == [[1, 1, 1, 1, 0]] * 3 + [[1, 0, 0, 1, 1]] * 2


def test_the_segmented_path_builds_no_dense_mask(monkeypatch):
    _, ours = pair()
    ours.set_scene_attention("sparse", sparse_tokens=3)

    def refuse(self, device=None):
        raise AssertionError("an N x N mask was built")

    monkeypatch.setattr(WanSceneLayout, "dense_self_mask", refuse)
    monkeypatch.setattr(WanSceneLayout, "dense_cross_mask", refuse)
    out = ours(torch.randn(1, 4, 4, 4, 6), torch.tensor([10.0]), torch.randn(1, 9, 16), scene_frames=[1, 2, 1],
               scene_text=[3, 3, 3], clean_scenes=[0]).sample  # fmt: skip
    assert torch.isfinite(out).all()


def test_segmented_equals_the_dense_backend():
    _, ours = pair()
    inputs = dict(hidden_states=torch.randn(2, 4, 5, 4, 6), timestep=torch.tensor([800.0, 20.0]),
                  encoder_hidden_states=torch.randn(2, 2 + 9, 16), scene_frames=[2, 2, 1], scene_text=[3, 3, 3],
                  global_text=2, clean_scenes=[0])  # fmt: skip
    for attention in ("full", "sparse"):
        outs = []
        for backend in ("segmented", "dense"):
            ours.set_scene_attention(attention, sparse_tokens=7, backend=backend)
            with torch.no_grad():
                outs.append(ours(**inputs).sample)
        assert (outs[0] - outs[1]).abs().max() < 1e-5, attention


def test_rope_schemes_consecutive_is_stock_restart_and_jump_move_frame_positions():
    _, ours = pair()
    cos, sin = ours.scene_rope([2, 3], 4, 6)
    stock_cos, stock_sin = ours.rope(torch.zeros(1, 4, 5, 4, 6))
    assert torch.equal(cos, stock_cos) and torch.equal(sin, stock_sin)
    assert ours.frame_positions([2, 3]).tolist() == [0, 1, 2, 3, 4]
    ours.register_to_config(rope_scheme="restart")
    assert ours.frame_positions([2, 3]).tolist() == [0, 1, 0, 1, 2]
    ours.register_to_config(rope_scheme="jump", rope_scene_gap=10)
    assert ours.frame_positions([2, 3]).tolist() == [0, 1, 12, 13, 14]
    cos, _ = ours.scene_rope([2, 3], 4, 6)
    positions = cos.view(5, 2, 3, -1)[:, 0, 0, : ours.rope.t_dim]
    assert torch.equal(positions[2], ours.rope.freqs_cos[12, : ours.rope.t_dim])
    with pytest.raises(ValueError, match="rope_max_seq_len"):
        ours.frame_positions([30, 30])
    with pytest.raises(ValueError, match="rope_scheme"):
        Mask2DiTWanTransformer3DModel(**CONFIG, rope_scheme="spiral")


def test_bad_scene_arguments_are_refused_with_the_numbers():
    _, ours = pair()
    hidden, t, text = torch.randn(1, 4, 3, 4, 6), torch.tensor([1.0]), torch.randn(1, 6, 16)
    with pytest.raises(ValueError, match="sum to 4"):
        ours(hidden, t, text, scene_frames=[2, 2])
    with pytest.raises(ValueError, match="do not add up"):
        ours(hidden, t, text, scene_frames=[1, 2], scene_text=[2, 2])
    with pytest.raises(ValueError, match="out of range"):
        ours(hidden, t, text, scene_frames=[1, 2], clean_scenes=[2])
    with pytest.raises(ValueError, match="self_attention"):
        ours.set_scene_attention("windowed")


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


def test_flow_matching_noises_as_wan_trains_and_an_expert_keeps_to_its_timesteps(tmp_path):
    from model.families import family_of
    from model.objectives import FlowMatching, shift_sigma
    from model.tiny import build_tiny_wan

    objective = FlowMatching(shift=5.0)
    latents = torch.randn(64, 6, 4, 2, 2)
    clean = torch.zeros(64, 2, dtype=torch.bool)
    clean[:, 0] = True
    inputs = objective.make_inputs(latents, [3, 3], clean, torch.Generator().manual_seed(0))
    sigma = (inputs.timesteps / 1000).view(-1, 1, 1, 1, 1)
    noise = inputs.target + latents
    assert torch.allclose(inputs.noisy[:, 3:], ((1 - sigma) * latents + sigma * noise)[:, 3:], atol=1e-5)
    assert torch.equal(inputs.noisy[:, :3], latents[:, :3])  # the clean context scene is not noised
    assert abs(float(shift_sigma(torch.tensor(0.5), 5.0)) - 5 / 6) < 1e-7
    assert float(inputs.timesteps.mean()) > 600  # shift 5 puts most draws at high noise, as Wan trains
    folder = build_tiny_wan(tmp_path / "a14b", layout="wan2.2-a14b")
    family = family_of(folder)
    high = family.objective(folder, expert="transformer").make_inputs(latents, [3, 3], clean, torch.Generator())
    low = family.objective(folder, expert="transformer_2").make_inputs(latents, [3, 3], clean, torch.Generator())
    assert float(high.timesteps.min()) >= 875 - 1e-3 and float(low.timesteps.max()) < 875


def test_family_is_read_from_the_folder_and_errors_name_it(tmp_path):
    from model.families import family_of
    from model.weights import ModelFolderError

    with pytest.raises(ModelFolderError, match="model_index.json not found"):
        family_of(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelFolderError, match="neither CogVideoX nor Wan"):
        family_of(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    assert family_of(tmp_path).name == "cogvideox"
    assert family_of(tmp_path, "wan").name == "wan"


def test_gradient_checkpointing_and_bf16_keep_the_scene_path():
    _, ours = pair()
    x, t, text = torch.randn(2, 4, 5, 4, 6), torch.tensor([500.0, 300.0]), torch.randn(2, 9, 16)
    kwargs = dict(scene_frames=[2, 3], scene_text=[4, 5], clean_scenes=[0])
    params = list(ours.parameters())
    plain = ours(x, t, text, **kwargs).sample
    grads = torch.autograd.grad(plain.square().sum(), params, allow_unused=True)
    ours.enable_gradient_checkpointing()
    ours.train()
    checkpointed = ours(x, t, text, **kwargs).sample
    again = torch.autograd.grad(checkpointed.square().sum(), params, allow_unused=True)
    assert torch.equal(plain, checkpointed)
    assert all(a is None and b is None or torch.allclose(a, b, atol=1e-6) for a, b in zip(grads, again))
    ours.disable_gradient_checkpointing()
    half = ours.to(torch.bfloat16)
    with torch.no_grad():
        low = half(x.bfloat16(), t, text.bfloat16(), **kwargs).sample
    assert low.dtype == torch.bfloat16 and (low.float() - plain.detach()).abs().max() < 0.1
