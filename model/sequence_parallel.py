"""Ulysses sequence parallelism for the dual-mask transformer: many scenes across GPUs, mask exact.

A group of P ranks shares one sample. Every rank holds 1/P of the text tokens and 1/P of the video
tokens (contiguous chunks, sizes may differ by one). Everything per token (projections, norms,
feed-forward, modulation) runs on the local chunk. For attention, one all-to-all turns the token
shard into a head shard: each rank then holds the *whole* sequence for H/P heads, runs the
unchanged dual-mask backend (`model.attention.scene_attention`) with the global scene layout, and a
second all-to-all returns to token shards. The output is gathered at the end, so every rank sees
the full prediction. Autograd goes through both exchanges (the backward of one is the other), so
gradients are those of the unsharded model.

    shard = SequenceShard.from_group(group)          # P ranks
    model.enable_sequence_parallel(shard)            # same weights on every rank of the group
    out = model(latents, text, t, scene_frames=..., ...).sample   # identical on every rank

Gradients: each rank's parameters receive its tokens' share, multiplied by P (the gather's backward
sums the identical upstream gradients of the P ranks); averaged over all ranks, as DeepSpeed and DDP
do, that is exactly the gradient of the same batch without sequence parallelism.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist


def chunk_sizes(total: int, parts: int) -> list[int]:
    """Sizes of `parts` contiguous chunks of `total` items, the first ones one larger (tensor_split)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


@dataclass(frozen=True)
class SequenceShard:
    """One rank's place in a sequence-parallel group."""

    group: object  # a torch.distributed ProcessGroup (None: the default group)
    rank: int  # rank within the group
    size: int  # ranks in the group

    @classmethod
    def from_group(cls, group=None) -> SequenceShard:
        return cls(group, dist.get_rank(group), dist.get_world_size(group))

    def bounds(self, total: int) -> tuple[int, int]:
        sizes = chunk_sizes(total, self.size)
        start = sum(sizes[: self.rank])
        return start, start + sizes[self.rank]

    def local(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's chunk of x along `dim`."""
        start, end = self.bounds(x.shape[dim])
        return x.narrow(dim, start, end - start)

    def check_heads(self, heads: int) -> None:
        if heads % self.size:
            raise ValueError(
                f"sequence parallelism over {self.size} ranks needs the attention heads ({heads}) to divide evenly; "
                f"use a group size that divides {heads} (e.g. {', '.join(str(p) for p in range(1, heads + 1) if heads % p == 0)})"
            )


def _exchange(chunks: list[torch.Tensor], lengths: list[int], group) -> list[torch.Tensor]:
    """all_to_all along dim 2: chunks[j] goes to rank j; returns what each rank sent here, in rank
    order, the one from rank i `lengths[i]` long. Chunks are padded to one length on the wire
    (gloo exchanges equal sizes only; the padding costs at most one token per rank)."""
    width = max(max(c.shape[2] for c in chunks), max(lengths))
    padded = [torch.nn.functional.pad(c, (0, 0, 0, width - c.shape[2])).contiguous() for c in chunks]
    received = [torch.empty_like(padded[0]) for _ in chunks]
    dist.all_to_all(received, padded, group=group)
    return [r[:, :, :n] for r, n in zip(received, lengths)]


def _tokens_to_heads(x: torch.Tensor, shard: SequenceShard, counts: list[int]) -> torch.Tensor:
    """(B, H, n_local, D) token shard -> (B, H/P, N, D) head shard (all tokens, in rank order)."""
    per = x.shape[1] // shard.size
    return torch.cat(_exchange(list(x.split(per, dim=1)), counts, shard.group), dim=2)


def _heads_to_tokens(x: torch.Tensor, shard: SequenceShard, counts: list[int]) -> torch.Tensor:
    """(B, H/P, N, D) head shard -> (B, H, n_local, D) token shard."""
    mine = counts[shard.rank]
    return torch.cat(_exchange(list(x.split(counts, dim=2)), [mine] * shard.size, shard.group), dim=1)


class _Exchange(torch.autograd.Function):
    """tokens -> heads (to_heads=True) or heads -> tokens; each direction is the other's backward."""

    @staticmethod
    def forward(ctx, x, shard, counts, to_heads):
        ctx.shard, ctx.counts, ctx.to_heads = shard, counts, to_heads
        return (_tokens_to_heads if to_heads else _heads_to_tokens)(x, shard, counts)

    @staticmethod
    def backward(ctx, grad):
        inverse = _heads_to_tokens if ctx.to_heads else _tokens_to_heads
        return inverse(grad, ctx.shard, ctx.counts), None, None, None


class _Gather(torch.autograd.Function):
    """All ranks' chunks along dim 1, in order; backward: the summed upstream gradient of my chunk."""

    @staticmethod
    def forward(ctx, x, shard, counts):
        ctx.shard, ctx.counts = shard, counts
        width = max(counts)
        padded = torch.nn.functional.pad(x, (0, 0) * (x.ndim - 2) + (0, width - x.shape[1]))
        gathered = [torch.empty_like(padded) for _ in range(shard.size)]
        dist.all_gather(gathered, padded.contiguous(), group=shard.group)
        return torch.cat([g[:, :n] for g, n in zip(gathered, counts)], dim=1)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.shard.group)
        start = sum(ctx.counts[: ctx.shard.rank])
        return grad[:, start : start + ctx.counts[ctx.shard.rank]], None, None


def tokens_to_heads(x: torch.Tensor, shard: SequenceShard, counts: list[int]) -> torch.Tensor:
    return _Exchange.apply(x, shard, counts, True)


def heads_to_tokens(x: torch.Tensor, shard: SequenceShard, counts: list[int]) -> torch.Tensor:
    return _Exchange.apply(x, shard, counts, False)


def gather_tokens(x: torch.Tensor, shard: SequenceShard, counts: list[int]) -> torch.Tensor:
    """(B, n_local, ...) -> (B, N, ...) on every rank of the group."""
    return _Gather.apply(x, shard, counts)


@dataclass(frozen=True)
class ShardView:
    """What one rank holds of a scene layout: its chunk of the text and of the video tokens, and
    how those chunks split into scenes (for per-scene modulation)."""

    shard: SequenceShard
    text_counts: list[int]  # text tokens of every rank
    video_counts: list[int]  # video tokens of every rank
    text_lengths: tuple[int, ...]  # this rank's text tokens per scene (zeros allowed)
    video_lengths: tuple[int, ...]  # this rank's video tokens per scene

    @classmethod
    def of(cls, layout, shard: SequenceShard) -> ShardView:
        def mine(lengths):
            return local_lengths(lengths, *shard.bounds(sum(lengths)))

        return cls(shard, chunk_sizes(layout.text_total, shard.size), chunk_sizes(layout.video_total, shard.size),
                   mine(layout.text_lengths), mine(layout.video_lengths))  # fmt: skip


def local_lengths(lengths, start: int, end: int) -> tuple[int, ...]:
    """Per-scene token counts of the contiguous range [start, end) of a sequence of scenes (zeros allowed)."""
    out, position = [], 0
    for length in lengths:
        out.append(max(0, min(end, position + length) - max(start, position)))
        position += length
    return tuple(out)


def init_from_env():
    """Join the default process group when launched by torchrun/deepspeed (WORLD_SIZE > 1); None otherwise."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return SequenceShard.from_group(None)
