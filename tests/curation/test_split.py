"""Tests of `curation/split.py`: split a long video into clips: logical frame windows that Ray
workers seek into."""

from __future__ import annotations

import numpy as np

from curation.split import plan_clips
from tests.conftest import CLIP_FRAMES, CLIP_MINUTES


def test_clip_windows_cover_every_frame_once():
    windows = plan_clips(1000, 24.0, CLIP_MINUTES, overlap_frames=30)
    owned = np.concatenate([np.arange(w.start_frame, w.end_frame) for w in windows])
    assert np.array_equal(owned, np.arange(1000))
    assert all(
        w.decode_start == max(0, w.start_frame - 30) and w.decode_end == min(1000, w.end_frame + 30) for w in windows
    )


def test_short_tail_is_folded_into_the_last_clip():
    windows = plan_clips(CLIP_FRAMES * 3 + 10, 24.0, CLIP_MINUTES, 0)
    assert len(windows) == 3 and windows[-1].end_frame == CLIP_FRAMES * 3 + 10
