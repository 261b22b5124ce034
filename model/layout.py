"""Where each scene's text and video tokens sit in the joint Mask²DiT sequence, and who sees whom.

Sequence order follows the paper: all scenes' text first, then all scenes' video in time order:

    [text_0 | text_1 | ... | text_{n-1} | video_0 | video_1 | ... | video_{n-1}]

The symmetric dual attention mask: text of scene i attends to text i and video i; video of scene
i attends to text i and to all video; nothing else. Equivalently, token q may attend token k iff
they belong to the same scene, or both are video.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class SceneLayout:
    """Token counts per scene. Hashable, so masks and plans derived from it can be cached."""

    text_lengths: tuple[int, ...]
    video_lengths: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.text_lengths) != len(self.video_lengths) or not self.text_lengths:
            raise ValueError(
                f"a scene layout needs one text and one video length per scene, got {len(self.text_lengths)} "
                f"text and {len(self.video_lengths)} video lengths"
            )
        if min(self.text_lengths) < 0 or min(self.video_lengths) <= 0:
            raise ValueError(f"scene lengths must be positive: text {self.text_lengths}, video {self.video_lengths}")

    @classmethod
    def from_frames(
        cls, scene_frames: Sequence[int], tokens_per_frame: int, text_lengths: int | Sequence[int] = 226
    ) -> SceneLayout:
        """Layout from latent frames per scene (after any temporal patching) and tokens per frame."""
        frames = tuple(int(f) for f in scene_frames)
        texts = (int(text_lengths),) * len(frames) if isinstance(text_lengths, int) else tuple(text_lengths)
        return cls(texts, tuple(f * tokens_per_frame for f in frames))

    @property
    def num_scenes(self) -> int:
        return len(self.text_lengths)

    @property
    def text_total(self) -> int:
        return sum(self.text_lengths)

    @property
    def video_total(self) -> int:
        return sum(self.video_lengths)

    @property
    def total(self) -> int:
        return self.text_total + self.video_total

    @cached_property
    def text_spans(self) -> tuple[tuple[int, int], ...]:
        """[start, end) of each scene's text in the joint sequence."""
        return _spans(0, self.text_lengths)

    @cached_property
    def video_spans(self) -> tuple[tuple[int, int], ...]:
        """[start, end) of each scene's video in the joint sequence (offset by all text)."""
        return _spans(self.text_total, self.video_lengths)

    def token_scene_ids(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scene index, is-video flag) of every token of the joint sequence."""
        scene = torch.cat(
            [torch.arange(self.num_scenes).repeat_interleave(torch.tensor(lengths)) for lengths in
             (self.text_lengths, self.video_lengths)]
        )  # fmt: skip
        is_video = torch.arange(self.total) >= self.text_total
        return scene.to(device), is_video.to(device)

    def dense_mask(self, device=None) -> torch.Tensor:
        """The (N, N) boolean mask, True where attention is allowed. For tests and the `dense` oracle."""
        scene, is_video = self.token_scene_ids(device)
        return (scene[:, None] == scene[None, :]) | (is_video[:, None] & is_video[None, :])


def _spans(offset: int, lengths: Sequence[int]) -> tuple[tuple[int, int], ...]:
    spans, start = [], offset
    for length in lengths:
        spans.append((start, start + length))
        start += length
    return tuple(spans)


@dataclass(frozen=True)
class WanSceneLayout:
    """Scenes on Wan, where text enters through cross-attention and self-attention sees video only.

    Video tokens: [video_0 | video_1 | ...] (the latent frames of all scenes, concatenated in time).
    Text tokens (keys of cross-attention): [global | text_0 | text_1 | ...]; `global_text` may be 0.

    - cross-attention: video of scene i sees the global text and text i (HoloCine's window
      cross-attention, Mask²DiT's text-video rule);
    - self-attention: all video (`sparse_tokens=None`), or, sparse, scene i sees its own scene and
      the first `sparse_tokens` tokens of every scene (in each scene's (frame, row, column) order;
      a scene shorter than that gives all its tokens). The key set is a set: a scene's own first
      tokens are not counted twice.
    """

    video_lengths: tuple[int, ...]
    text_lengths: tuple[int, ...]
    global_text: int = 0
    sparse_tokens: int | None = None

    def __post_init__(self) -> None:
        if len(self.video_lengths) != len(self.text_lengths) or not self.video_lengths:
            raise ValueError(
                f"a scene layout needs one text and one video length per scene, got {len(self.text_lengths)} "
                f"text and {len(self.video_lengths)} video lengths"
            )
        if min(self.video_lengths) <= 0 or min(self.text_lengths) < 0 or self.global_text < 0:
            raise ValueError(f"scene lengths must be positive: video {self.video_lengths}, text {self.text_lengths}")
        if self.global_text == 0 and min(self.text_lengths) == 0:
            raise ValueError(f"every scene needs text tokens (or a global caption): text {self.text_lengths}")
        if self.sparse_tokens is not None and self.sparse_tokens < 1:
            raise ValueError(f"sparse_tokens must be at least 1, got {self.sparse_tokens}")

    @property
    def num_scenes(self) -> int:
        return len(self.video_lengths)

    @property
    def video_total(self) -> int:
        return sum(self.video_lengths)

    @property
    def text_total(self) -> int:
        return self.global_text + sum(self.text_lengths)

    @cached_property
    def video_spans(self) -> tuple[tuple[int, int], ...]:
        return _spans(0, self.video_lengths)

    @cached_property
    def text_spans(self) -> tuple[tuple[int, int], ...]:
        """[start, end) of each scene's own text among the cross-attention keys (after the global text)."""
        return _spans(self.global_text, self.text_lengths)

    @cached_property
    def summary_spans(self) -> tuple[tuple[int, int], ...]:
        """The tokens of each scene that every scene sees under sparse self-attention."""
        k = self.sparse_tokens or 0
        return tuple((start, min(end, start + k)) for start, end in self.video_spans)

    def cross_plan(self, query_lengths: Sequence[int] | None = None) -> tuple:
        """Cross-attention rectangles (see `model.attention.Plan`), source 0 = the text keys.

        query_lengths: video tokens per scene of the queries at hand (a rank's shard under sequence
        parallelism; zeros allowed); default the whole layout."""
        plan = []
        for (qs, qe), (ts, te) in zip(_spans(0, query_lengths or self.video_lengths), self.text_spans):
            if qe == qs:
                continue
            if self.global_text:
                plan.append((qs, qe, 0, 0, self.global_text, False))
            if te > ts:
                plan.append((qs, qe, 0, ts, te, bool(self.global_text)))
        return tuple(plan)

    def sparse_plan(self) -> tuple:
        """Sparse self-attention rectangles: source 0 = all video keys, source 1 = the summary keys
        (every scene's `summary_spans`, concatenated in scene order)."""
        plan, offsets = [], _spans(0, [e - s for s, e in self.summary_spans])
        total = offsets[-1][1]
        for (qs, qe), (own_start, own_end) in zip(self.video_spans, offsets):
            plan.append((qs, qe, 0, qs, qe, False))  # own scene
            if own_start > 0:
                plan.append((qs, qe, 1, 0, own_start, True))  # earlier scenes' first tokens
            if own_end < total:
                plan.append((qs, qe, 1, own_end, total, True))  # later scenes' first tokens
        return tuple(plan)

    def dense_cross_mask(self, device=None) -> torch.Tensor:
        """(video_total, text_total) boolean mask, True where attention is allowed. The oracle."""
        scene = torch.arange(self.num_scenes).repeat_interleave(torch.tensor(self.video_lengths))
        text_scene = torch.cat(
            [
                torch.full((self.global_text,), -1),
                torch.arange(self.num_scenes).repeat_interleave(torch.tensor(self.text_lengths)),
            ]
        )
        mask = (scene[:, None] == text_scene[None, :]) | (text_scene[None, :] == -1)
        return mask.to(device)

    def dense_self_mask(self, device=None) -> torch.Tensor:
        """(video_total, video_total) boolean mask of self-attention. The oracle."""
        n = self.video_total
        if self.sparse_tokens is None:
            return torch.ones(n, n, dtype=torch.bool, device=device)
        scene = torch.arange(self.num_scenes).repeat_interleave(torch.tensor(self.video_lengths))
        summary = torch.zeros(n, dtype=torch.bool)
        for start, end in self.summary_spans:
            summary[start:end] = True
        return ((scene[:, None] == scene[None, :]) | summary[None, :]).to(device)


def clean_mask(clean_scenes, batch_size: int, num_scenes: int, device) -> torch.Tensor | None:
    """clean_scenes (scene indices for the whole batch, or a bool tensor (S,) or (B, S)) as a (B, S) bool tensor, or None."""
    if clean_scenes is None:
        return None
    if isinstance(clean_scenes, torch.Tensor) and clean_scenes.dtype == torch.bool:
        mask = clean_scenes.to(device)
        if mask.shape[-1] != num_scenes:
            raise ValueError(f"clean_scenes mask has {mask.shape[-1]} scenes, the input has {num_scenes}")
        return mask.expand(batch_size, num_scenes)
    indices = [int(i) for i in clean_scenes]
    if any(not 0 <= i < num_scenes for i in indices):
        raise ValueError(f"clean scene indices {indices} out of range for {num_scenes} scenes")
    mask = torch.zeros(num_scenes, dtype=torch.bool, device=device)
    mask[indices] = True
    return mask.expand(batch_size, num_scenes)
