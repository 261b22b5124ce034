"""Tests of `model/families.py`: what differs between backbones, behind one small interface:
CogVideoX and Wan2.1/Wan2.2."""

from __future__ import annotations

import json
import shutil

import pytest

from model.generate import main
from model.pipeline import Mask2DiTPipeline, ModelFolderError


def test_incomplete_model_folder_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelFolderError, match="missing vae"):
        Mask2DiTPipeline.from_pretrained(broken)
    (tmp_path / "p.json").write_text('["a"]')
    assert main(["--model", str(broken), "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")]) == 2
    assert "missing vae" in capsys.readouterr().err


def test_family_is_read_from_the_folder_and_errors_name_it(tmp_path):
    from model.families import family_of
    from model.weights import ModelFolderError

    with pytest.raises(ModelFolderError, match="model_index.json not found"):
        family_of(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelFolderError, match="neither CogVideoX nor Wan"):
        family_of(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    assert family_of(tmp_path).name == "cogvideox"
    assert family_of(tmp_path, "wan").name == "wan"
