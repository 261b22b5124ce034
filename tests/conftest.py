"""Shared fixtures, each built once per session: real H.264 videos with known cuts, a local Ray, a
curated and captioned manifest, tiny models, a local S3 endpoint, TransNetV2."""

from __future__ import annotations

import gzip
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from curation.samples import write_synthetic_video
from manifests import read_table, write_part
from manifests.io import table_path
from model.tiny import build_tiny_backbones, build_tiny_model
from model.transnetv2 import TransNetV2Detector
from tests.support.curation_reference import write_videos
from tests.support.manifests import shot
from tests.support.s3_server import s3_server

FPS = 24.0


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped, with the reason, where no CUDA GPU is visible."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (python benchmarks/gpu_check.py runs these on one)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


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


# --- fixtures shared by several test modules --------------------------------------------------


@pytest.fixture(scope="session")
def backbones(tmp_path_factory):
    """Tiny random CLIP and DINOv2 folders and a TorchScript I3D-style network, saved like the real ones."""
    return build_tiny_backbones(tmp_path_factory.mktemp("backbones"))


@pytest.fixture
def parts_manifest(tmp_path):
    for v in range(30):
        video_id = f"v{v:03d}"
        write_part(tmp_path, "shots", video_id, [shot(video_id, s) for s in range(v % 4 + 1)])
        write_part(tmp_path, "videos", video_id, [{"video_id": video_id, "source_path": f"/data/{video_id}.mp4",
                                                   "status": "ok"}])  # fmt: skip
    folder = table_path(tmp_path, "shots")
    # A part rewritten by a plain pandas round trip (large_string, ints as written by pandas) and an
    # older one without a nullable column: three file schemas in one table.
    frame = pd.read_parquet(folder / "part-v007.parquet")
    frame.to_parquet(folder / "part-v007.parquet", index=False)
    older = pq.read_table(folder / "part-v011.parquet").drop_columns(["detector"])
    pq.write_table(older, folder / "part-v011.parquet")
    return tmp_path


@pytest.fixture(scope="session")
def s3():
    with s3_server() as env:
        yield env


@pytest.fixture()
def s3_env(s3, monkeypatch):
    for key, value in s3.items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def bpe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    merges = [
        "#version: 0.2",
        "t h",
        "th e</w>",
        "a n",
        "an d</w>",
        "m a",
        "ma n</w>",
        "w a",
        "l k",
        "wa lk",
        "walk s</w>",
    ]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(merges) + "\n")
    return path


@pytest.fixture(scope="session")
def reference_videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("reference_videos"))


@pytest.fixture(scope="session")
def manifest(tmp_path_factory, ray_local):
    """Curated from 4 generated videos, with hand-written captions marked ok (as Gemini would return)."""
    from curation.run import main as curate

    root = tmp_path_factory.mktemp("train")
    videos = [write_synthetic_video(root / "videos" / f"v{i}.mp4", [60, 72, 66], fps=24.0, size=(64, 48), seed=10 + i)
              for i in range(4)]  # fmt: skip
    out = root / "manifest"
    assert curate(["--input", str(root / "videos"), "--output", str(out), "--within", "video",
                   "--min-relevance", "-10", "--min-shot-frames", "25", "--caption-shots"]) == 0  # fmt: skip
    shots = read_table(out, "shots")
    for video_id, part in shots.groupby("video_id"):
        write_part(out, "shot_captions", video_id, [
            {"shot_id": s, "video_id": video_id, "caption": f"shot {i} of a man walking", "status": "ok"}
            for i, s in enumerate(part["shot_id"])])  # fmt: skip
    combos = read_table(out, "combinations")
    for video_id, part in combos.groupby("video_id"):
        write_part(out, "annotations", video_id, [
            {"combination_id": c.combination_id, "video_id": video_id, "shot_ids": list(c.shot_ids),
             "captions": [f"Actor1 (a man) scene {k}" for k in range(len(c.shot_ids))], "status": "ok"}
            for c in part.itertuples()])  # fmt: skip
    assert len(videos) == 4 and len(combos) >= 2
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def detector():
    return TransNetV2Detector.load()


@pytest.fixture(scope="session")
def transition_video(tmp_path_factory):
    from curation.samples import write_transition_video

    return write_transition_video(
        tmp_path_factory.mktemp("transitions") / "transitions.mp4", [70, 60, 80, 60, 70, 80],
        [("cut", 0), ("dissolve", 24), ("cut", 0), ("dissolve", 30), ("cut", 0)], size=(160, 90),
    )  # fmt: skip


@pytest.fixture(scope="module")
def stages_travel_by_value(request):
    """Ray workers cannot import test modules: stages defined in the test module (and the crash
    stages) travel pickled by value while its tests run."""
    import ray.cloudpickle

    from tests.support import crash_stages

    modules = (request.module, crash_stages)
    for module in modules:
        ray.cloudpickle.register_pickle_by_value(module)
    yield
    for module in modules:
        ray.cloudpickle.unregister_pickle_by_value(module)
