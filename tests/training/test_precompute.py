"""Tests of `training/precompute.py`: encode every training scene (VAE latents) and caption (T5 /
umT5) once, for the trainer to read."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support import REPO
from tests.support.training import config_for
from training.config import load_config
from training.train import train


def test_precomputed_latents_need_the_fixed_middle_window(tmp_path):
    config = REPO / "training" / "configs" / "sft.yaml"
    with pytest.raises(ValueError, match="frame_window=middle"):
        load_config(config, [f"data.precomputed={tmp_path}"])
    assert load_config(config, [f"data.precomputed={tmp_path}", "data.frame_window=middle"]).data.precomputed


@pytest.mark.slow
def test_precomputed_latents_train_like_online_encoding(manifest, tiny_model, tmp_path):
    from training.latent_store import LatentStore
    from training.precompute import precompute

    overrides = ["data.frame_window=middle", "data.scene_frames=from_shots", "data.num_frames=17", "data.stage=sft",
                 "data.scenes=3", "run.max_steps=2"]  # fmt: skip
    store = tmp_path / "store"
    counts = precompute(config_for(manifest, tiny_model, tmp_path / "p", *overrides), store)
    assert counts["written"] > 0 and LatentStore(store).identity
    again = precompute(config_for(manifest, tiny_model, tmp_path / "p", *overrides), store)
    assert again["written"] == 0  # everything is already there
    history = train(config_for(manifest, tiny_model, tmp_path / "r", *overrides, f"data.precomputed={store}"))[
        "history"
    ]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)
