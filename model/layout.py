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
