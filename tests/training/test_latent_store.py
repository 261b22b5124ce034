"""Tests of `training/latent_store.py`: the sharded store of precomputed latents and text embeddings."""

from __future__ import annotations

import json

import pytest
import torch

from training.latent_store import LatentStore, scene_key, stable_seed, text_key


def test_tensors_written_by_two_writers_in_shards_read_back_exactly(tmp_path):
    store = LatentStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="not a precomputed store"):
        _ = store.identity
    store.write_identity("enc-1", {"num_frames": 9})
    first = {f"latent-{i}": torch.randn(2, 4, 3, 3) for i in range(5)}
    second = {"text-a": torch.randn(12, 32)}
    store.write(first, writer="rank0", shard_size=2)  # 3 shards of at most 2 tensors
    store.write(second, writer="rank1")
    assert len(list((tmp_path / "store").glob("shard-rank0-*.safetensors"))) == 3
    again = LatentStore(tmp_path / "store")  # a reader opened afterwards sees both writers' indexes
    assert again.identity == "enc-1" and json.loads((tmp_path / "store" / "identity.json").read_text())["data"]
    assert all(torch.equal(again.get(k), v) for k, v in (first | second).items()) and "text-a" in again
    with pytest.raises(KeyError, match="re-run training/precompute.py"):
        again.get("latent-99")


def test_keys_and_seeds_are_stable_and_depend_on_everything_that_changes_the_tensor():
    class Data:
        num_frames, height, width = 9, 32, 32

    key = scene_key("shot_1|0|9", Data, "enc-1")
    assert key == scene_key("shot_1|0|9", Data, "enc-1") and key.startswith("latent-")
    assert key != scene_key("shot_1|0|9", Data, "enc-2") and key != scene_key("shot_1|1|9", Data, "enc-1")
    assert text_key("Actor1 walks.", "enc-1") != text_key("Actor1 runs.", "enc-1")
    assert stable_seed("a", 1) == stable_seed("a", 1) != stable_seed("a", 2) and 0 <= stable_seed("x") < 2**31
