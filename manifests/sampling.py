"""Every rule for which frames of a shot are used, in one place.

Each is a pure function of frame counts (no decoding), so the stages that sample a shot (the
detection pass keeping frames, re-decoding from the source, the embedders, captioning media, the
training loader, expansion context, evaluation) agree by construction:

- `sample_indices`: `count` offsets spread uniformly (segment middles): captions, previews, CLIP
  and the colour embedder, evaluation.
- `viclip_frame_indices`: the official ViCLIP demo's offsets (every n // count-th frame).
- `frame_offsets`: one of the two by name (a `FrameSpec`'s rule).
- `pass_frames`: the frames a shot [start, end) uses in curation, on a power-of-two grid of at most
  `GRID_FRAMES` candidates, so the detection pass can keep them before it knows where the shot ends
  (curation/shot_frames.py explains why).
- `middle_window`: a training sample's frames, the middle window at the largest stride that fits.
- `max_stride_window`: the official SFT and expansion-context sampling, a random start.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

GRID_FRAMES = 24  # at most this many candidate frames per shot on the detection pass's grid

Rule = Literal["uniform", "viclip"]


def sample_indices(num_frames: int, count: int = 8) -> list[int]:
    """`count` frame offsets spread uniformly over a shot (segment middles)."""
    if num_frames <= 0:
        raise ValueError("a shot needs at least one frame")
    return [min(num_frames - 1, int((i + 0.5) * num_frames / count)) for i in range(count)]


def viclip_frame_indices(num_frames: int, count: int = 8) -> list[int]:
    """The frames the official ViCLIP demo feeds the model: every (n // count)-th frame from the
    first, the first `count` of them. Shots shorter than `count` frames (which the official code
    rejects) repeat frames evenly instead."""
    if num_frames <= 0:
        raise ValueError("a shot needs at least one frame")
    step = num_frames // count
    if step == 0:
        return [i * num_frames // count for i in range(count)]
    return list(range(0, num_frames, step))[:count]


def frame_offsets(rule: Rule, num_frames: int, count: int) -> list[int]:
    return viclip_frame_indices(num_frames, count) if rule == "viclip" else sample_indices(num_frames, count)


def grid_multiples(start: int, end: int, stride: int) -> int:
    """How many frames in [start, end) are multiples of stride."""
    return (end - 1) // stride - (start - 1) // stride if end > start else 0


def grid_stride(start: int, end: int, limit: int = GRID_FRAMES) -> int:
    """The smallest power-of-two stride leaving at most `limit` of its multiples in [start, end)."""
    stride = 1
    while grid_multiples(start, end, stride) > limit:
        stride *= 2
    return stride


def grid_frames(start: int, end: int, limit: int = GRID_FRAMES) -> list[int]:
    """A shot's candidate frames: the multiples of its grid stride in [start, end)."""
    stride = grid_stride(start, end, limit)
    return list(range(-(-start // stride) * stride, end, stride))


def nearest(wanted: list[int], available: list[int]) -> list[int]:
    """For each wanted frame the nearest available one (the earlier on a tie); `available` sorted."""
    if not available:
        return []
    positions = np.searchsorted(available, wanted)
    chosen = []
    for frame, pos in zip(wanted, positions):
        options = [available[i] for i in (pos - 1, pos) if 0 <= i < len(available)]
        chosen.append(min(options, key=lambda f: (abs(f - frame), f)))
    return chosen


def pass_frames(start: int, end: int, offsets: list[int], limit: int = GRID_FRAMES) -> list[int]:
    """The one rule of curation: the frames a shot [start, end) uses for wanted `offsets` (a
    `frame_offsets` result), whichever path decodes them: each takes the nearest grid frame."""
    return nearest([start + o for o in offsets], grid_frames(start, end, limit))


def middle_window(available: int, count: int, max_stride: int) -> tuple[int, int] | None:
    """(start, stride) of `count` frames in the middle of `available`, at the largest stride <=
    max_stride at which they fit; None when even stride 1 does not fit."""
    for stride in range(max(1, max_stride), 0, -1):
        span = (count - 1) * stride + 1
        if span <= available:
            return (available - span) // 2, stride
    return None


def max_stride_window(available: int, count: int, max_stride: int, rng: np.random.Generator) -> tuple[int, int] | None:
    """(start, stride) of `count` frames out of `available`: the largest stride <= max_stride at which
    they fit, and a start drawn uniformly from every position that fits (the official SFT and
    expansion-context sampling). None when even stride 1 does not fit."""
    for stride in range(max_stride, 0, -1):
        last_start = available - 1 - (count - 1) * stride
        if last_start >= 0:
            return int(rng.integers(0, last_start + 1)), stride
    return None
