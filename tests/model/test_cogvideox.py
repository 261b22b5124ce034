"""Tests of `model/cogvideox.py`: Mask²DiT: CogVideoX's transformer with the dual mask and
segment-level conditional (clean) scenes."""

from __future__ import annotations

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from model import Mask2DiTTransformer3DModel, SceneLayout
from tests.support.models import LAYOUTS, TINY, tiny_model


def rope_by_formula(head_dim, times, rows, cols, theta=10000.0):
    """CogVideoX 3D RoPE written out from its definition: per axis, angle = position * theta^(-2k/d),
    each frequency used for two adjacent channels; channels ordered [time | rows | cols]."""

    def axis(dim, positions):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
        angles = torch.outer(torch.as_tensor(positions, dtype=torch.float64), freqs).repeat_interleave(2, dim=1)
        return angles.cos(), angles.sin()

    dims = (head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3)
    t, h, w = axis(dims[0], times), axis(dims[1], rows), axis(dims[2], cols)
    out = []
    for part in (0, 1):
        grid = torch.cat([t[part][:, None, None].expand(-1, len(rows), len(cols), -1),
                          h[part][None, :, None].expand(len(times), -1, len(cols), -1),
                          w[part][None, None].expand(len(times), len(rows), -1, -1)], dim=-1)  # fmt: skip
        out.append(grid.reshape(-1, sum(dims)).float())
    return out


def crop_region(grid_h, grid_w, base_h, base_w):
    """The official resize-crop region of a (grid_h, grid_w) grid inside the (base_h, base_w) grid."""
    if grid_h / grid_w > base_h / base_w:
        height, width = base_h, int(round(base_h / grid_h * grid_w))
    else:
        width, height = base_w, int(round(base_w / grid_w * grid_h))
    top, left = int(round((base_h - height) / 2.0)), int(round((base_w - width) / 2.0))
    return top, left, top + height, left + width


LATENT = (8, 8)  # latent height, width -> 16 tokens per latent frame with patch 2


def inputs(model, scene_frames, text_lengths, batch=2, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    latents = torch.randn(batch, sum(scene_frames), cfg.in_channels, *LATENT, generator=g, dtype=dtype)
    text = torch.randn(batch, sum(text_lengths), cfg.text_embed_dim, generator=g, dtype=dtype)
    timestep = torch.tensor([999, 311][:batch])
    rope = model.prepare_rotary_emb(scene_frames, *LATENT)
    return dict(hidden_states=latents, encoder_hidden_states=text, timestep=timestep, image_rotary_emb=rope,
                scene_frames=scene_frames, text_lengths=text_lengths)  # fmt: skip


def attention_layer_outputs(model, args):
    """Outputs of the first block's attention (text, video) for the given inputs."""
    captured = {}
    attn = model.transformer_blocks[0].attn1
    handle = attn.register_forward_hook(lambda m, i, out: captured.update(video=out[0], text=out[1]))
    with torch.no_grad():
        model(**args)
    handle.remove()
    return captured["text"], captured["video"]


@pytest.mark.parametrize("pixels", [(480, 720), (480, 480), (720, 480), (256, 384)], ids=lambda p: f"{p[0]}x{p[1]}")
@pytest.mark.parametrize("scheme", ["consecutive", "per_scene"])
def test_rope_positions_follow_the_official_grid_at_every_resolution(pixels, scheme):
    model = Mask2DiTTransformer3DModel(num_attention_heads=1, attention_head_dim=64, num_layers=1, in_channels=4,
                                       out_channels=4, text_embed_dim=8, time_embed_dim=8, sample_height=60,
                                       sample_width=90, use_rotary_positional_embeddings=True,
                                       position_scheme=scheme)  # fmt: skip
    latent_h, latent_w = pixels[0] // 8, pixels[1] // 8
    grid_h, grid_w = latent_h // 2, latent_w // 2
    top, left, bottom, right = crop_region(grid_h, grid_w, 30, 45)
    rows = [top + i * (bottom - top) / grid_h for i in range(grid_h)]
    cols = [left + i * (right - left) / grid_w for i in range(grid_w)]
    frames = [3, 2]
    times = list(range(5)) if scheme == "consecutive" else [0, 1, 2, 0, 1]
    cos, sin = model.prepare_rotary_emb(frames, latent_h, latent_w)
    expected_cos, expected_sin = rope_by_formula(64, times, rows, cols)
    torch.testing.assert_close(cos, expected_cos, atol=2e-6, rtol=0)
    torch.testing.assert_close(sin, expected_sin, atol=2e-6, rtol=0)


@pytest.mark.parametrize("rotary", [True, False], ids=["5B-style-rope", "2B-style-sincos"])
def test_single_scene_equals_stock_cogvideox(rotary):
    model = tiny_model(use_rotary_positional_embeddings=rotary)
    stock = CogVideoXTransformer3DModel(**(TINY | {"use_rotary_positional_embeddings": rotary}))
    stock.load_state_dict(model.state_dict())
    stock.eval()
    args = inputs(model, [3], [6])
    with torch.no_grad():
        ours = model(**args).sample
        args.pop("scene_frames"), args.pop("text_lengths")
        theirs = stock(**args).sample
        plain = model(**args).sample  # called exactly like the stock model
    assert (ours - theirs).abs().max() <= 1e-5
    assert (plain - theirs).abs().max() <= 1e-5


@pytest.mark.parametrize("texts,videos", LAYOUTS[1:])
@pytest.mark.parametrize("clean", [None, [0]], ids=["all-noisy", "first-clean"])
def test_full_model_backends_agree_in_output_and_gradients(texts, videos, clean):
    model = tiny_model()
    frames = [n // 16 for n in videos]
    args = inputs(model, frames, list(texts))
    results = {}
    for backend in ("dense", "segmented"):
        model.set_scene_attention(backend)
        model.zero_grad()
        out = model(**args, clean_scenes=clean).sample
        out.square().mean().backward()
        results[backend] = (out.detach(), [p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(results["segmented"][0], results["dense"][0], atol=2e-5, rtol=1e-4)
    for ours, ref in zip(results["segmented"][1], results["dense"][1]):
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=1e-4)
    model.set_scene_attention("flex")
    with torch.no_grad():
        torch.testing.assert_close(model(**args, clean_scenes=clean).sample, results["dense"][0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("backend", ["segmented", "dense"])
def test_gradient_checkpointing_gives_the_same_gradients(backend):
    model = tiny_model(attention_backend=backend).train()
    args = inputs(model, [2, 1, 2], [6, 6, 6])
    grads = []
    for checkpointing in (False, True):
        if checkpointing:
            model.enable_gradient_checkpointing()
        model.zero_grad()
        model(**args, clean_scenes=[1]).sample.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_mask_semantics_by_perturbation():
    """Changing scene j's text changes nothing of scene i != j; a video token can change all video."""
    model = tiny_model(num_layers=1)
    texts, frames = [6, 6, 6], [1, 2, 1]
    layout = SceneLayout(tuple(texts), tuple(16 * f for f in frames))
    args = inputs(model, frames, texts)
    text0, video0 = attention_layer_outputs(model, args)
    changed = dict(args, encoder_hidden_states=args["encoder_hidden_states"].clone())
    changed["encoder_hidden_states"][:, 6:12] += 1.0  # scene 1's text
    text1, video1 = attention_layer_outputs(model, changed)
    tspan, vspan = layout.text_spans, [(a - layout.text_total, b - layout.text_total) for a, b in layout.video_spans]
    for i in (0, 2):
        assert torch.equal(text0[:, slice(*tspan[i])], text1[:, slice(*tspan[i])])
        assert torch.equal(video0[:, slice(*vspan[i])], video1[:, slice(*vspan[i])])
    assert not torch.allclose(video0[:, slice(*vspan[1])], video1[:, slice(*vspan[1])])
    # One video token of scene 0 changes: every video token moves (video attends all video), and
    # so does scene 0's text, while the other scenes' text does not.
    changed = dict(args, hidden_states=args["hidden_states"].clone())
    changed["hidden_states"][:, 0, :, 0, 0] += 1.0
    text2, video2 = attention_layer_outputs(model, changed)
    assert ((video2 - video0).abs().amax(dim=-1) > 0).all()
    assert not torch.equal(text2[:, :6], text0[:, :6])
    assert torch.equal(text2[:, 6:], text0[:, 6:])


def test_clean_scenes_use_the_timestep_zero_embedding():
    """A clean scene in a batch at timestep t sees exactly what it would see at t=0."""
    model = tiny_model()
    args = inputs(model, [2, 2], [6, 6])
    with torch.no_grad():
        out_clean = model(**args, clean_scenes=[0]).sample
        at_zero = model(**dict(args, timestep=torch.zeros(2, dtype=torch.long))).sample
        noisy = model(**args).sample
    # Scene 0 at t=0 and scene 1 at t: differs from both uniform runs, but scene 0's output is a
    # function of per-scene modulation, so with both scenes clean it equals the all-zero run.
    with torch.no_grad():
        both_clean = model(**args, clean_scenes=torch.tensor([True, True])).sample
    torch.testing.assert_close(both_clean, at_zero, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out_clean, noisy) and not torch.allclose(out_clean, at_zero)
    # Per-sample masks: sample 0 has scene 0 clean, sample 1 has none.
    with torch.no_grad():
        mixed = model(**args, clean_scenes=torch.tensor([[True, False], [False, False]])).sample
    torch.testing.assert_close(mixed[0], out_clean[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1], noisy[1], atol=1e-5, rtol=1e-5)


def test_bf16_forward_and_backward_run_and_stay_close_to_fp32():
    model = tiny_model()
    args = inputs(model, [1, 2], [6, 6])
    with torch.no_grad():
        reference = model(**args, clean_scenes=[0]).sample
    bf16 = tiny_model().to(torch.bfloat16)
    args16 = {
        k: (v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
        for k, v in args.items()
    }
    out = bf16(**args16, clean_scenes=[0]).sample
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_bad_scene_arguments_are_clear_errors():
    model = tiny_model()
    args = inputs(model, [2, 1], [6, 6])
    with pytest.raises(ValueError, match="sum to 4"):
        model(**dict(args, scene_frames=[2, 2]))
    with pytest.raises(ValueError, match="cannot be split equally"):
        model(**dict(args, text_lengths=None, encoder_hidden_states=args["encoder_hidden_states"][:, :11]))
    with pytest.raises(ValueError, match="out of range"):
        model(**args, clean_scenes=[5])
    with pytest.raises(ValueError, match="unknown attention backend"):
        model.set_scene_attention("sparse")


@pytest.mark.slow
def test_torch_compile_matches_eager():
    model = tiny_model(num_layers=1)
    args = inputs(model, [1, 2], [6, 6])
    with torch.no_grad():
        eager = model(**args, clean_scenes=[0]).sample
        compiled = torch.compile(model)(**args, clean_scenes=[0]).sample
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)


def on_cuda(args: dict, dtype=torch.bfloat16) -> dict:
    moved = {}
    for key, value in args.items():
        if isinstance(value, torch.Tensor):
            value = value.to("cuda", dtype) if value.is_floating_point() else value.to("cuda")
        elif isinstance(value, tuple):
            value = tuple(x.to("cuda") for x in value)
        moved[key] = value
    return moved


@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["segmented", "dense", "flex"])
def test_the_model_in_bf16_on_cuda_with_gradient_checkpointing_matches_fp32_on_cpu(backend):
    reference_model = tiny_model(attention_head_dim=64).train()
    args = inputs(reference_model, [2, 1, 2], [6, 3, 5])
    reference = reference_model(**args, clean_scenes=[1]).sample
    reference.square().mean().backward()
    model = tiny_model(attention_head_dim=64, attention_backend=backend).to("cuda", torch.bfloat16).train()
    model.enable_gradient_checkpointing()
    out = model(**on_cuda(args), clean_scenes=[1]).sample
    out.float().square().mean().backward()
    assert out.dtype == torch.bfloat16
    assert (out.float().cpu() - reference).abs().max() < 0.05 * reference.abs().max()
    for (name, ours), theirs in zip(model.named_parameters(), reference_model.parameters()):
        assert ours.grad is not None and torch.isfinite(ours.grad).all(), name
        scale = theirs.grad.abs().max().clamp_min(1e-6)
        assert (ours.grad.float().cpu() - theirs.grad).abs().max() < 0.1 * scale, name
