"""Tests of `model/weights.py`: helpers every weight loader shares: the checkpoint and model-folder
error types and a fast content hash."""

from __future__ import annotations

import json

import torch
from diffusers import CogVideoXTransformer3DModel

from model import Mask2DiTTransformer3DModel
from tests.support.models import TINY, tiny_model


def test_weights_round_trip_bit_identical_and_stock_checkpoints_load(tmp_path):
    model = tiny_model(attention_backend="dense", position_scheme="per_scene")
    model.save_pretrained(tmp_path / "ours")
    loaded = Mask2DiTTransformer3DModel.from_pretrained(tmp_path / "ours")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.config.attention_backend == "dense" and loaded.config.position_scheme == "per_scene"
    # A stock CogVideoX transformer folder (as in a CogVideoX-5B download) loads unchanged.
    stock = CogVideoXTransformer3DModel(**TINY)
    stock.save_pretrained(tmp_path / "stock")
    config = json.loads((tmp_path / "stock" / "config.json").read_text())
    ours = Mask2DiTTransformer3DModel.from_pretrained(tmp_path / "stock")
    assert {k: ours.config[k] for k in TINY} == {k: config[k] for k in TINY}
    for (name, a), (_, b) in zip(stock.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), name
    assert ours.config.attention_backend == "segmented"


def test_a_model_folder_check_names_the_missing_parts_and_accepts_either_of_a_pair(tmp_path):
    import pytest

    from model.weights import ModelFolderError, checked_folder

    parts = ("model_index.json", "vae", ("transformer", "transformer_2"))
    with pytest.raises(ModelFolderError, match="model folder not found; pass a local Test-layout folder"):
        checked_folder(tmp_path / "nowhere", "Test-layout", parts, "")
    (tmp_path / "vae").mkdir()
    with pytest.raises(ModelFolderError, match=r"missing model_index.json, transformer\. It needs them"):
        checked_folder(tmp_path, "Test-layout", parts, "It needs them")
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "transformer_2").mkdir()
    assert checked_folder(tmp_path, "Test-layout", parts, "") == tmp_path
