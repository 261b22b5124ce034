"""Tests of `model/wan.py`: Mask²DiT on Wan2.1/Wan2.2: diffusers' `WanTransformer3DModel` with the
dual mask and clean scenes."""

from __future__ import annotations

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


@pytest.mark.cuda
@pytest.mark.parametrize("attention", ["full", "sparse"])
def test_wan_scenes_in_bf16_on_cuda_with_checkpointing_match_the_fp32_oracle(attention):
    """Full and sparse inter-shot self-attention, window cross-attention, clean scenes: the segmented
    path on the GPU in bf16 against the dense-mask oracle in fp32 on the CPU."""
    stock, ours = pair(attention_head_dim=64)
    ours.set_scene_attention(attention, sparse_tokens=5)
    layout = ours.scene_layout([2, 3, 1], 4, 6, [4, 3, 2], 3)
    assert (layout.sparse_tokens is not None) == (attention == "sparse")
    g = torch.Generator().manual_seed(2)
    hidden, timestep = torch.randn(1, 4, 6, 4, 6, generator=g), torch.tensor([700.0])
    text = torch.randn(1, 12, 16, generator=g)
    reference = oracle(stock, layout, hidden, timestep, text, [0])
    ours = ours.to("cuda", torch.bfloat16).train()
    ours.enable_gradient_checkpointing()
    out = ours(hidden.to("cuda", torch.bfloat16), timestep.cuda(), text.to("cuda", torch.bfloat16),
               scene_frames=[2, 3, 1], scene_text=[4, 3, 2], global_text=3, clean_scenes=[0]).sample  # fmt: skip
    out.float().square().mean().backward()
    assert (out.float().cpu() - reference).abs().max() < 0.05 * reference.abs().max()
    assert all(torch.isfinite(p.grad).all() for p in ours.parameters() if p.grad is not None)
