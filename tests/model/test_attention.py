"""Tests of `model/attention.py`: exact dual-mask attention for the joint multi-scene sequence,
behind one switch."""

from __future__ import annotations

import pytest
import torch

from model import SceneLayout, scene_attention
from model.attention import _math_backward, _math_forward, lse_kernels
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
    ref_out, ref_lse, _ = _math_forward(q, k, v, 0.3)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(lse, ref_lse, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for ours, ref in zip(bwd(grad, q, k, v, out, lse, aux, 0.3), _math_backward(grad, q, k, v, out, lse, (), 0.3)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
