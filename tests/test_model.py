"""The Mask²DiT transformer: stock equality, exact backends, mask semantics, clean scenes, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel

from model import Mask2DiTTransformer3DModel, SceneLayout, scene_attention, scene_diffusion_loss
from model.attention import _math_backward, _math_forward, lse_kernels

TINY = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=16,
    text_embed_dim=24, num_layers=2, sample_width=8, sample_height=8, sample_frames=9,
    max_text_seq_length=6, use_rotary_positional_embeddings=True,
)  # fmt: skip
LATENT = (8, 8)  # latent height, width -> 16 tokens per latent frame with patch 2

LAYOUTS = [
    ((6,), (16,)),
    ((6, 6), (32, 32)),
    ((6, 3), (48, 16)),  # unequal text and video lengths
    ((4, 4, 4, 4), (16, 32, 16, 48)),
    ((5, 0, 2), (16, 16, 32)),  # a scene without text
]


def tiny_model(seed: int = 0, **overrides) -> Mask2DiTTransformer3DModel:
    torch.manual_seed(seed)
    model = Mask2DiTTransformer3DModel(**(TINY | overrides))
    # Random (not zero-initialised) modulation so every path is exercised.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def inputs(model, scene_frames, text_lengths, batch=2, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    cfg = model.config
    latents = torch.randn(batch, sum(scene_frames), cfg.in_channels, *LATENT, generator=g, dtype=dtype)
    text = torch.randn(batch, sum(text_lengths), cfg.text_embed_dim, generator=g, dtype=dtype)
    timestep = torch.tensor([999, 311][:batch])
    rope = model.prepare_rotary_emb(scene_frames, *LATENT)
    return dict(hidden_states=latents, encoder_hidden_states=text, timestep=timestep, image_rotary_emb=rope,
                scene_frames=scene_frames, text_lengths=text_lengths)  # fmt: skip


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


def test_layout_mask_is_the_dual_mask():
    layout = SceneLayout((2, 1), (3, 2))
    mask = layout.dense_mask()
    t0, t1, v0, v1 = [0, 1], [2], [3, 4, 5], [6, 7]
    allowed = {(q, k) for group in ([*t0, *v0], [*t1, *v1]) for q in group for k in group}
    allowed |= {(q, k) for q in v0 + v1 for k in v0 + v1}
    assert {(q, k) for q in range(8) for k in range(8) if mask[q, k]} == allowed


@pytest.mark.parametrize("texts,videos", LAYOUTS)
def test_attention_backends_equal_the_dense_oracle(texts, videos):
    layout = SceneLayout(texts, videos)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, layout.total, 16, requires_grad=True) for _ in range(3))
    dense = scene_attention(q, k, v, layout, "dense")
    grad = torch.randn_like(dense)
    dense_grads = torch.autograd.grad(dense, (q, k, v), grad)
    segmented = scene_attention(q, k, v, layout, "segmented")
    for ours, ref in zip(torch.autograd.grad(segmented, (q, k, v), grad), dense_grads):
        torch.testing.assert_close(ours, ref, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(segmented, dense, atol=2e-6, rtol=1e-5)
    with torch.no_grad():  # FlexAttention has no CPU backward
        torch.testing.assert_close(scene_attention(q, k, v, layout, "flex"), dense, atol=2e-6, rtol=1e-5)


def test_segmented_backward_kernels_agree_with_the_plain_pytorch_reference():
    """The CPU kernel path and the any-device fallback give the same merged attention and grads."""
    layout = SceneLayout((4, 4), (24, 8))
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 2, layout.total, 8) for _ in range(3))
    fwd, bwd = lse_kernels(q)
    out, lse, aux = fwd(q, k, v, 0.3)
    ref_out, ref_lse, _ = _math_forward(q, k, v, 0.3)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for ours, ref in zip(bwd(grad, q, k, v, out, lse, aux, 0.3), _math_backward(grad, q, k, v, out, lse, (), 0.3)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


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


def attention_layer_outputs(model, args):
    """Outputs of the first block's attention (text, video) for the given inputs."""
    captured = {}
    attn = model.transformer_blocks[0].attn1
    handle = attn.register_forward_hook(lambda m, i, out: captured.update(video=out[0], text=out[1]))
    with torch.no_grad():
        model(**args)
    handle.remove()
    return captured["text"], captured["video"]


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


def test_loss_ignores_clean_scenes():
    prediction = torch.randn(2, 6, 4, 8, 8, requires_grad=True)
    target = torch.randn(2, 6, 4, 8, 8)
    loss, per_scene = scene_diffusion_loss(prediction, target, [2, 3, 1], clean_scenes=[0, 2])
    (grad,) = torch.autograd.grad(loss, prediction)
    assert grad[:, :2].abs().sum() == 0 and grad[:, 5:].abs().sum() == 0 and grad[:, 2:5].abs().sum() > 0
    torch.testing.assert_close(loss, ((prediction - target)[:, 2:5] ** 2).mean())
    assert per_scene.shape == (2, 3)


def test_weights_round_trip_bit_identical_and_stock_checkpoints_load(tmp_path):
    model = tiny_model(attention_backend="dense", position_scheme="per_scene")
    model.save_pretrained(tmp_path / "ours")
    loaded = Mask2DiTTransformer3DModel.from_pretrained(tmp_path / "ours")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config.attention_backend == "dense" and loaded.config.position_scheme == "per_scene"
    # A stock CogVideoX transformer folder (as in a CogVideoX-5B download) loads unchanged.
    stock = CogVideoXTransformer3DModel(**TINY)
    stock.save_pretrained(tmp_path / "stock")
    config = json.loads((tmp_path / "stock" / "config.json").read_text())
    ours = Mask2DiTTransformer3DModel.from_pretrained(tmp_path / "stock")
    assert {k: ours.config[k] for k in TINY} == {k: config[k] for k in TINY}
    for (name, a), (_, b) in zip(stock.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name
    assert ours.config.attention_backend == "segmented"


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
