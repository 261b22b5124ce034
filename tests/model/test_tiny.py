"""Tests of `model/tiny.py`: tiny random model folders in the real layouts, loadable by the real classes."""

from __future__ import annotations

import json

import pytest
import torch

from model.tiny import WAN_LAYOUTS, build_tiny_model, build_tiny_wan


def test_a_tiny_cogvideox_folder_has_the_official_layout_and_the_same_seed_gives_the_same_weights(
    tmp_path, tiny_model_dir
):
    from safetensors.torch import load_file

    first, again = tiny_model_dir, build_tiny_model(tmp_path / "again")  # both seed 0
    index = json.loads((first / "model_index.json").read_text())
    assert {"tokenizer", "text_encoder", "vae", "transformer", "scheduler"} <= set(index)
    weights = sorted((first / "transformer").glob("*.safetensors"))
    assert weights and (first / "transformer" / "config.json").is_file()
    a, b = load_file(weights[0]), load_file(sorted((again / "transformer").glob("*.safetensors"))[0])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("layout", WAN_LAYOUTS)
def test_each_tiny_wan_layout_loads_through_the_family_reader(tmp_path, layout):
    from model.families import family_of

    folder = build_tiny_wan(tmp_path / layout, layout=layout)
    index = json.loads((folder / "model_index.json").read_text())
    assert family_of(folder).name.startswith("wan")
    assert ("transformer_2" in index and index["transformer_2"][0] is not None) == (layout == "wan2.2-a14b")
    with pytest.raises(ValueError, match="layout must be one of"):
        build_tiny_wan(tmp_path / "x", layout="wan3")
