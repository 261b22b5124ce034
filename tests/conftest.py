"""Shared fixtures: real H.264 videos with known cuts, generated once per test session."""

from __future__ import annotations

import os

import pytest

from curation.samples import write_synthetic_video

FPS = 24.0
CLIP_FRAMES = 96  # clip windows of 4 s at 24 fps in tests that split into clips
CLIP_MINUTES = CLIP_FRAMES / FPS / 60


@pytest.fixture(scope="session")
def videos_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def multi_shot_video(videos_dir):
    return write_synthetic_video(videos_dir / "multi_shot.mp4", [60, 40, 90, 30, 50], fps=FPS, seed=1)


@pytest.fixture(scope="session")
def long_video(videos_dir):
    """Longer than 4 clips of CLIP_FRAMES: cuts at 95 and 290 sit next to the clip boundaries 96 and
    288, and the shot [95, 200) spans the boundaries at 96 and 192."""
    return write_synthetic_video(videos_dir / "long.mp4", [50, 45, 105, 90, 50, 70], fps=FPS, seed=2, gop=30)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
