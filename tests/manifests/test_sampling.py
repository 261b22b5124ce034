"""Tests of `manifests/sampling.py`: every rule for which frames of a shot are used, in one place."""

from __future__ import annotations

import numpy as np
import pytest

from manifests.sampling import (
    GRID_FRAMES,
    frame_offsets,
    grid_frames,
    max_stride_window,
    middle_window,
    nearest,
    pass_frames,
    sample_indices,
    viclip_frame_indices,
)


def _middle_window_as_the_loader_computed_it(shot_frames: int, frames: int, stride: int):
    """training/data.py's frame_plan before the rule moved to manifests/sampling.py."""
    while stride >= 1:
        span = (frames - 1) * stride + 1
        if span <= shot_frames:
            return (shot_frames - span) // 2, stride
        stride -= 1
    return None


def test_the_middle_window_equals_the_training_loaders_rule_before_it_moved():
    for available in range(0, 120, 7):
        for count in (1, 9, 17, 49):
            for stride in (1, 2, 3, 5):
                assert middle_window(available, count, stride) == _middle_window_as_the_loader_computed_it(
                    available, count, stride
                )


def test_uniform_and_viclip_offsets_and_their_rule_names():
    assert sample_indices(80) == [5, 15, 25, 35, 45, 55, 65, 75]
    assert viclip_frame_indices(83) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert frame_offsets("uniform", 80, 8) == sample_indices(80)
    assert frame_offsets("viclip", 5, 8) == viclip_frame_indices(5) == [0, 0, 1, 1, 2, 3, 3, 4]
    with pytest.raises(ValueError, match="at least one frame"):
        sample_indices(0)


def test_pass_frames_lie_on_the_grid_and_are_exact_for_short_shots():
    # A shot of at most GRID_FRAMES frames uses exactly the wanted frames.
    assert pass_frames(100, 100 + GRID_FRAMES, sample_indices(GRID_FRAMES)) == [100 + o for o in sample_indices(24)]
    # A long shot's frames are the nearest grid frames: multiples of one power-of-two stride.
    start, end = 1003, 1403
    grid = grid_frames(start, end)
    assert len(grid) <= GRID_FRAMES and len({b - a for a, b in zip(grid, grid[1:])}) == 1
    chosen = pass_frames(start, end, sample_indices(end - start))
    assert set(chosen) <= set(grid) and chosen == sorted(chosen)
    assert nearest([5, 10], [0, 8, 12]) == [8, 8]  # a tie takes the earlier frame


def test_max_stride_window_draws_every_fitting_start():
    rng = np.random.default_rng(0)
    assert max_stride_window(40, 9, 3, rng)[1] == 3 and max_stride_window(8, 9, 3, rng) is None
    starts = {max_stride_window(40, 9, 3, np.random.default_rng(s))[0] for s in range(300)}
    assert starts == set(range(40 - 1 - 8 * 3 + 1))
