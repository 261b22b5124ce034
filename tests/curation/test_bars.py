"""Tests of `curation/bars.py`: the active picture from the luma profiles, in upright pixels."""

from __future__ import annotations

import av
import numpy as np
import pytest

from curation.bars import Bars, active_span, luma_plane, profiles, turn
from curation.measures import ShotSpan


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_a_rectangle_turns_as_the_frame_does(rotation):
    height, width = 6, 10
    stored = np.zeros((height, width), dtype=bool)
    x, y, w, h = 2, 1, 5, 3
    stored[y : y + h, x : x + w] = True
    upright = np.rot90(stored, rotation // 90)
    rows, cols = np.flatnonzero(upright.any(axis=1)), np.flatnonzero(upright.any(axis=0))
    expected = (cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
    assert turn((x, y, w, h), rotation, width, height) == expected
    assert turn(expected, -rotation, *upright.shape[::-1]) == (x, y, w, h)  # and back


def test_bars_are_the_rows_and_columns_dark_in_every_sample():
    frame = np.full((40, 64), 16, np.uint8)
    frame[5:35, 8:56] = 120  # windowboxed picture
    dark_scene = frame.copy()
    dark_scene[5:35, 8:56] = 18  # a dark frame inside the picture: the crop comes from the other
    bars = Bars()
    samples = [profiles(frame), profiles(dark_scene)]
    got = bars.summarise(samples, ShotSpan(0, 10, 64, 40, 0))
    assert got == {"crop_x": 8, "crop_y": 5, "crop_w": 48, "crop_h": 30}
    assert bars.summarise([], ShotSpan(0, 10, 64, 40, 0))["crop_w"] == 64  # no sample: the whole frame
    assert active_span(np.zeros(9), 24) == (0, 9)  # all black: the whole span (the darkness filter's job)


def test_the_luma_plane_is_read_without_conversion_and_other_formats_are_converted():
    image = np.zeros((36, 64, 3), np.uint8)
    image[:, 10:] = 200
    for fmt in ("yuv420p", "rgb24"):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=fmt)
        plane = luma_plane(frame)
        assert plane.shape == (36, 64)
        assert plane[:, :8].max() < 24 and plane[:, 12:].min() > 150
