"""Tests of `curation/samples.py`: the synthetic videos have exactly the cuts they claim."""

from __future__ import annotations

import av
import numpy as np

from curation.samples import write_sample_videos, write_synthetic_video


def _mean_colours(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.array([f.to_ndarray(format="rgb24").reshape(-1, 3).mean(0) for f in container.decode(video=0)])


def test_a_synthetic_video_changes_colour_exactly_at_its_cuts(tmp_path):
    video = write_synthetic_video(tmp_path / "v.mp4", [20, 15, 25], fps=12.0, size=(64, 48), seed=3)
    assert video.cuts == [20, 35] and video.num_frames == 60 and video.fps == 12.0
    colours = _mean_colours(video.path)
    assert len(colours) == 60
    jumps = np.abs(np.diff(colours, axis=0)).sum(axis=1)
    assert sorted(np.argsort(jumps)[-2:] + 1) == video.cuts  # the two largest changes are the cuts
    assert jumps[[c - 1 for c in video.cuts]].min() > 5 * np.delete(jumps, [c - 1 for c in video.cuts]).max()


def test_the_sample_videos_are_reproducible(tmp_path):
    first = write_sample_videos(tmp_path / "a", count=1, seed=1)
    again = write_sample_videos(tmp_path / "b", count=1, seed=1)
    assert first[0].cuts == again[0].cuts and len(first[0].cuts) >= 2
    assert first[0].path.read_bytes() == again[0].path.read_bytes()
