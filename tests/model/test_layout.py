"""Tests of `model/layout.py`: where each scene's text and video tokens sit in the joint Mask²DiT
sequence, and who sees whom."""

from __future__ import annotations

from model import SceneLayout
from model.layout import WanSceneLayout


def test_layout_mask_is_the_dual_mask():
    layout = SceneLayout((2, 1), (3, 2))
    mask = layout.dense_mask()
    t0, t1, v0, v1 = [0, 1], [2], [3, 4, 5], [6, 7]
    allowed = {(q, k) for group in ([*t0, *v0], [*t1, *v1]) for q in group for k in group}
    allowed |= {(q, k) for q in v0 + v1 for k in v0 + v1}
    assert {(q, k) for q in range(8) for k in range(8) if mask[q, k]} == allowed


def test_dense_masks_by_hand():
    layout = WanSceneLayout((3, 2), (1, 2), global_text=1, sparse_tokens=1)
    assert layout.dense_cross_mask().int().tolist() == [[1, 1, 0, 0]] * 3 + [[1, 0, 1, 1]] * 2
    assert layout.dense_self_mask().int().tolist() == [[1, 1, 1, 1, 0]] * 3 + [[1, 0, 0, 1, 1]] * 2
