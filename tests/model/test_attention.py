"""Tests of `model/attention.py`: exact dual-mask attention for the joint multi-scene sequence,
behind one switch."""

from __future__ import annotations

import pytest
import torch

from model import SceneLayout, scene_attention
from model.attention import lse_kernels, math_backward, math_forward
from tests.support.models import LAYOUTS


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
    ref_out, ref_lse, _ = math_forward(q, k, v, 0.3)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for ours, ref in zip(bwd(grad, q, k, v, out, lse, aux, 0.3), math_backward(grad, q, k, v, out, lse, (), 0.3)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)


# --- on a CUDA GPU (skipped elsewhere; `python benchmarks/gpu_check.py` runs them) ---------------

# Unequal scenes and texts, one scene without text: CogVideoX's 226-token text and 1,350 tokens per
# latent frame at 480x720 would need minutes per case in the dense oracle, so a few frames per scene.
CUDA_LAYOUT = ((226, 120, 0), (1350 * 2, 1350, 1350))
HEAD_LAYOUTS = {"cogvideox-5b": (48, 64), "wan2.1-1.3b": (12, 128)}


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    ours, reference = ours.detach().float(), reference.detach().float()
    return float((ours - reference).abs().max() / reference.abs().max().clamp_min(1e-12))


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("heads", sorted(HEAD_LAYOUTS))
def test_segmented_attention_on_cuda_equals_the_fp32_dense_oracle_forward_and_backward(heads, dtype):
    """bf16 takes the flash kernels with the LSE merge; fp32 the plain-PyTorch kernels. Both are
    checked against the dense boolean-mask oracle computed in fp32 on the same (rounded) inputs."""
    num_heads, head_dim = HEAD_LAYOUTS[heads]
    layout = SceneLayout(*CUDA_LAYOUT)
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, num_heads, layout.total, head_dim, device="cuda", generator=gen).to(dtype)
               for _ in range(3))  # fmt: skip
    grad = torch.randn(1, num_heads, layout.total, head_dim, device="cuda", generator=gen).to(dtype)
    ours_inputs = [x.clone().requires_grad_() for x in (q, k, v)]
    ref_inputs = [x.float().requires_grad_() for x in (q, k, v)]
    ours = scene_attention(*ours_inputs, layout, "segmented")
    reference = scene_attention(*ref_inputs, layout, "dense")
    assert ours.dtype == dtype
    ours.backward(grad)
    reference.backward(grad.float())
    tolerance = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert relative_error(ours, reference) < tolerance
    for name, a, b in zip("qkv", ours_inputs, ref_inputs):
        assert relative_error(a.grad, b.grad) < tolerance * 2, name


@pytest.mark.cuda
def test_the_cuda_bf16_path_uses_the_flash_kernels_and_fp32_the_reference_kernels():
    from model.attention import cuda_flash_forward

    bf16 = torch.zeros(1, 1, 4, 64, device="cuda", dtype=torch.bfloat16)
    assert lse_kernels(bf16)[0] is cuda_flash_forward
    assert lse_kernels(bf16.float())[0] is math_forward


@pytest.mark.cuda
def test_compiled_flex_attention_on_cuda_equals_the_dense_oracle_forward_and_backward():
    layout = SceneLayout((226, 120, 30), (1350, 675, 2025))
    gen = torch.Generator(device="cuda").manual_seed(1)
    q, k, v = (torch.randn(1, 12, layout.total, 64, device="cuda", generator=gen, dtype=torch.bfloat16)
               .requires_grad_() for _ in range(3))  # fmt: skip
    flex = scene_attention(q, k, v, layout, "flex")
    flex_grads = torch.autograd.grad(flex.float().square().sum(), (q, k, v))
    dense = scene_attention(q, k, v, layout, "dense")
    dense_grads = torch.autograd.grad(dense.float().square().sum(), (q, k, v))
    assert relative_error(flex, dense) < 2e-2
    for a, b in zip(flex_grads, dense_grads):
        assert relative_error(a, b) < 4e-2
