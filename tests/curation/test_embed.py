"""Tests of `curation/embed.py`: shot embeddings: ViCLIP (the paper's), frame-averaged CLIP, or a
weight-free colour-layout default."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from manifests import read_table
from model.viclip import (
    ViCLIP,
)
from tests.conftest import CLIP_MINUTES
from tests.support.jobs import job
from tests.support.viclip import TINY


@pytest.mark.slow
def test_a_resumed_run_embeds_the_same_frames_as_an_uninterrupted_one(ray_local, tmp_path, long_video):

    from manifests.io import remove_part

    out = tmp_path / "out"
    common = ("--detector", "adaptive")
    assert job(out, long_video.path, extra=common) == 0
    straight = read_table(out, "shot_embeddings").set_index("shot_id")
    long_shots = read_table(out, "shots").query("num_frames > 24")
    assert len(long_shots)  # shots long enough that the pass had to thin its candidates
    # Killed after the shots were committed but before the embeddings: the re-run re-decodes them.
    video_id = read_table(out, "videos")["video_id"].iloc[0]
    remove_part(out, "shot_embeddings", video_id)
    assert job(out, long_video.path, extra=common) == 0
    resumed = read_table(out, "shot_embeddings").set_index("shot_id")
    assert sorted(resumed.index) == sorted(straight.index)
    for shot_id in straight.index:
        assert list(resumed.loc[shot_id, "frames"]) == list(straight.loc[shot_id, "frames"]), shot_id
        a = np.asarray(resumed.loc[shot_id, "embedding"], np.float32)
        b = np.asarray(straight.loc[shot_id, "embedding"], np.float32)
        assert np.abs(a - b).max() < 2e-3, shot_id


@pytest.mark.slow
def test_job_embeds_shots_and_writes_combinations(ray_local, tmp_path, multi_shot_video):
    from curation.run import main

    out = tmp_path / "out"
    args = ["--input", str(multi_shot_video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
            "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    assert main(args) == 0
    embeddings = read_table(out, "shot_embeddings")
    shots = read_table(out, "shots")
    assert set(embeddings["shot_id"]) == set(shots.loc[shots["status"] == "ok", "shot_id"])
    assert {len(e) for e in embeddings["embedding"]} == {176} and (embeddings["embedder"] == "color-layout").all()
    combos = read_table(out, "combinations")
    long_shots = shots[shots["num_frames"] >= 49].sort_values("start_frame")["shot_id"].tolist()
    assert [list(c) for c in combos["shot_ids"]] == [long_shots]  # the only 3 shots of >= 49 frames, in order
    record = json.loads((out / "run.json").read_text())
    assert "weight-free" in record["relevance"]["embedding"]["fidelity"]
    # A re-run embeds nothing again and writes the same combinations.
    assert main(args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["relevance"]["embedding"]["videos_embedded"] == 0
    assert read_table(out, "combinations")["combination_id"].tolist() == combos["combination_id"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("embedder", ["viclip", "clip"])
def test_job_runs_with_checkpoint_embedders(ray_local, tmp_path, multi_shot_video, embedder):
    """The job's embedding actors load a local checkpoint (tiny, random) through the real loaders."""
    from curation.run import main

    torch.manual_seed(0)  # the random tiny weights: the same in any test order
    if embedder == "viclip":
        checkpoint = tmp_path / "viclip.pth"
        ViCLIP(TINY).save_checkpoint(checkpoint)
    else:
        from transformers import CLIPConfig, CLIPModel

        checkpoint = tmp_path / "clip"
        CLIPModel(CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, vocab_size=64),
                             vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=2, image_size=32, patch_size=8),
                             projection_dim=16)).save_pretrained(checkpoint)  # fmt: skip
    out = tmp_path / "out"
    assert main(["--input", str(multi_shot_video.path), "--output", str(out), "--embedder", embedder,
                 f"--{embedder}-checkpoint", str(checkpoint), "--within", "video", "--min-relevance", "-10"]) == 0  # fmt: skip
    embeddings = read_table(out, "shot_embeddings")
    dim = TINY.embed_dim if embedder == "viclip" else 16
    assert len(embeddings) == 3 and {len(e) for e in embeddings["embedding"]} == {dim}
    assert embeddings["checkpoint_hash"].notna().all() and embeddings["embedder"].iloc[0].startswith(embedder)
    assert len(read_table(out, "combinations")) == 1
