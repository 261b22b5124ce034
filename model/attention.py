"""Exact dual-mask attention for the joint multi-scene sequence, behind one switch.

Backends (all compute the same function; see `model.layout` for the mask):

- ``segmented`` (default): the mask is a union of a few dense rectangles, so attention is computed
  per rectangle with a kernel that also returns the log-sum-exp (LSE), and the partial results
  are merged exactly by LSE. Video queries run once against all video keys (one unmasked call,
  the bulk of the FLOPs), plus once per scene against that scene's 226 text keys; text queries of
  scene i run against text i and video i. No N×N mask and no per-scene copies of the video keys
  or values are ever made. The backward pass calls the kernel's own backward for each rectangle
  with the *merged* output and LSE: that yields exactly the gradient of the full masked softmax
  (the same identity ring attention uses), so training needs no LSE gradients.
- ``dense``: SDPA with an explicit (N, N) boolean mask. The oracle for tests; O(N²) memory.
- ``flex``: FlexAttention with a BlockMask cached per layout. Fast on GPU (compiled); on CPU
  PyTorch supports its forward only.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from model.layout import SceneLayout

BACKENDS = ("segmented", "dense", "flex")

# (query start, query end, key source, key start, key end, merge): which key/value pair of the call
# (`source`) and which of its tokens a block of queries sees; merge=False for a query range's first
# rectangle (it writes), True for the later ones (merged by LSE).
Plan = tuple[tuple[int, int, int, int, int, bool], ...]


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def scene_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    layout: SceneLayout,
    backend: str = "segmented",
    scale: float | None = None,
) -> torch.Tensor:
    """Dual-mask attention of (B, H, N, D) query/key/value laid out as `layout`; returns (B, H, N, D)."""
    if query.shape[2] != layout.total or key.shape[2] != layout.total:
        raise ValueError(f"sequence has {query.shape[2]} tokens but the scene layout describes {layout.total}")
    scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    if backend == "segmented":
        return rectangle_attention(query, [(key, value)], segment_plan(layout), scale)
    if backend == "dense":
        return F.scaled_dot_product_attention(
            query, key, value, attn_mask=_dense_mask(layout, query.device), scale=scale
        )
    if backend == "flex":
        return _flex_attention(query, key, value, layout, scale)
    raise ValueError(check_backend(backend))


@functools.lru_cache(maxsize=64)
def segment_plan(layout: SceneLayout) -> Plan:
    """The mask as rectangles; each query range's first rectangle writes, the later ones merge into it."""
    video_start, end = layout.text_total, layout.total
    plan = [(video_start, end, 0, video_start, end, False)]  # all video -> all video: one unmasked call
    for (ts, te), (vs, ve) in zip(layout.text_spans, layout.video_spans):
        if te > ts:
            plan.append((vs, ve, 0, ts, te, True))  # video of scene i -> text of scene i
            plan.append((ts, te, 0, ts, te, False))  # text of scene i -> text of scene i
            plan.append((ts, te, 0, vs, ve, True))  # text of scene i -> video of scene i
    return tuple(plan)


def rectangle_attention(
    query: torch.Tensor, sources: list[tuple[torch.Tensor, torch.Tensor]], plan: Plan, scale: float | None = None
) -> torch.Tensor:
    """Exact attention of (B, H, Nq, D) queries over a union of key rectangles, merged by LSE.

    sources: (key, value) pairs of shape (B, H, Nk_j, D); the plan says which tokens of which pair
    each query range sees. Every query range needs one writing rectangle first. Gradients reach every
    source (a source that is a slice or concatenation of other tensors passes them back through autograd).
    """
    scale = scale if scale is not None else 1.0 / math.sqrt(query.shape[-1])
    flat = [x for pair in sources for x in pair]
    return _SegmentedAttention.apply(query, plan, scale, *flat)


# --- kernels returning (output, logsumexp) and their backward, per device ---------------------


def _cpu_forward(q, k, v, scale):
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
    return out, lse, ()


def _cpu_backward(grad, q, k, v, out, lse, aux, scale):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        grad, q, k, v, out, lse, 0.0, False, scale=scale
    )


def cuda_flash_forward(q, k, v, scale):
    out, lse, cum_q, cum_k, max_q, max_k, philox_seed, philox_offset, _ = (
        torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, False, False, scale=scale)
    )
    # The kernel's own bookkeeping goes back to its backward unchanged (as in PyTorch's ring attention).
    return out, lse, (cum_q, cum_k, max_q, max_k, philox_seed, philox_offset)


def _cuda_flash_backward(grad, q, k, v, out, lse, aux, scale):
    cum_q, cum_k, max_q, max_k, philox_seed, philox_offset = aux
    return torch.ops.aten._scaled_dot_product_flash_attention_backward(
        grad, q, k, v, out, lse, cum_q, cum_k, max_q, max_k, 0.0, False, philox_seed, philox_offset, scale=scale
    )


def math_forward(q, k, v, scale):
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * scale
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.matmul(torch.exp(scores - lse[..., None]), v.float())
    return out.to(q.dtype), lse, ()


def math_backward(grad, q, k, v, out, lse, aux, scale):
    """Attention backward given the (merged) output and LSE, in plain PyTorch (any device)."""
    qf, kf, vf, gf = q.float(), k.float(), v.float(), grad.float()
    probs = torch.exp(torch.matmul(qf, kf.transpose(-1, -2)) * scale - lse[..., None])
    grad_v = torch.matmul(probs.transpose(-1, -2), gf)
    delta = (gf * out.float()).sum(-1, keepdim=True)
    grad_scores = probs * (torch.matmul(gf, vf.transpose(-1, -2)) - delta)
    grad_q = torch.matmul(grad_scores, kf) * scale
    grad_k = torch.matmul(grad_scores.transpose(-1, -2), qf) * scale
    return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_v.to(v.dtype)


def lse_kernels(tensor: torch.Tensor) -> tuple[Callable, Callable]:
    """The fastest (forward, backward) pair that returns the LSE for this device and dtype."""
    if tensor.device.type == "cpu":
        return _cpu_forward, _cpu_backward
    if tensor.device.type == "cuda" and tensor.dtype in (torch.float16, torch.bfloat16) and tensor.shape[-1] <= 256:
        return cuda_flash_forward, _cuda_flash_backward
    return math_forward, math_backward


class _SegmentedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, plan: Plan, scale: float, *sources):
        forward_kernel, backward_kernel = lse_kernels(query)
        keys, values = sources[0::2], sources[1::2]
        out = torch.empty_like(query)
        lse = query.new_empty(query.shape[:3], dtype=torch.float32)
        ctx.aux = []
        for qs, qe, src, ks, ke, merge in plan:
            part, part_lse, aux = forward_kernel(
                query[:, :, qs:qe], keys[src][:, :, ks:ke], values[src][:, :, ks:ke], scale
            )
            ctx.aux.append(aux)
            if not merge:
                out[:, :, qs:qe] = part
                lse[:, :, qs:qe] = part_lse
                continue
            # Merge exactly: softmax over the union of key sets, in fp32.
            old_lse = lse[:, :, qs:qe]
            new_lse = torch.logaddexp(old_lse, part_lse)
            merged = out[:, :, qs:qe].float() * torch.exp(old_lse - new_lse)[..., None]
            merged += part.float() * torch.exp(part_lse - new_lse)[..., None]
            out[:, :, qs:qe] = merged.to(out.dtype)
            lse[:, :, qs:qe] = new_lse
        ctx.save_for_backward(query, out, lse, *sources)
        ctx.plan, ctx.scale, ctx.backward_kernel = plan, scale, backward_kernel
        return out

    @staticmethod
    def backward(ctx, grad_out):
        query, out, lse, *sources = ctx.saved_tensors
        keys, values = sources[0::2], sources[1::2]
        grad_out = grad_out.contiguous()
        grad_q = torch.zeros_like(query)
        grad_k, grad_v = [torch.zeros_like(k) for k in keys], [torch.zeros_like(v) for v in values]
        for (qs, qe, src, ks, ke, _), aux in zip(ctx.plan, ctx.aux):
            # With the merged output and LSE, each rectangle's kernel backward gives exactly its share
            # of the full masked-softmax gradient: probabilities are exp(s - lse_total), and the
            # row term sum(dO * O) uses the true output.
            gq, gk, gv = ctx.backward_kernel(
                grad_out[:, :, qs:qe], query[:, :, qs:qe], keys[src][:, :, ks:ke], values[src][:, :, ks:ke],
                out[:, :, qs:qe], lse[:, :, qs:qe].contiguous(), aux, ctx.scale,
            )  # fmt: skip
            grad_q[:, :, qs:qe] += gq
            grad_k[src][:, :, ks:ke] += gk
            grad_v[src][:, :, ks:ke] += gv
        flat = [g for pair in zip(grad_k, grad_v) for g in pair]
        return (grad_q, None, None, *flat)


# --- dense oracle and FlexAttention ------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _dense_mask(layout: SceneLayout, device: torch.device) -> torch.Tensor:
    return layout.dense_mask(device)


@functools.lru_cache(maxsize=32)
def flex_block_mask(layout: SceneLayout, device: torch.device):
    """The dual mask as a FlexAttention BlockMask; fully masked tiles are skipped by the kernel."""
    from torch.nn.attention.flex_attention import create_block_mask

    scene, is_video = layout.token_scene_ids(device)

    def dual_mask(batch, head, q_index, kv_index):
        return (scene[q_index] == scene[kv_index]) | (is_video[q_index] & is_video[kv_index])

    return create_block_mask(dual_mask, None, None, layout.total, layout.total, device=device)


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_attention(query, key, value, layout, scale):
    from torch.nn.attention.flex_attention import flex_attention

    if query.device.type == "cpu":
        if torch.is_grad_enabled() and any(x.requires_grad for x in (query, key, value)):
            raise RuntimeError(
                "the flex backend has no backward on CPU (a PyTorch limit); train on CPU with the default "
                "'segmented' backend, or run flex under torch.no_grad()"
            )
        query, key, value = query.detach(), key.detach(), value.detach()
    block_mask = flex_block_mask(layout, query.device)
    # Eager FlexAttention is a slow reference implementation; compiled is the real kernel (GPU).
    kernel = _compiled_flex() if query.device.type == "cuda" else flex_attention
    return kernel(query, key, value, block_mask=block_mask, scale=scale)
