"""Tests of `model/families.py`: what differs between backbones, behind one small interface:
CogVideoX and Wan2.1/Wan2.2."""

from __future__ import annotations

import json
import shutil

import pytest

from model.cogvideox_pipeline import Mask2DiTPipeline, ModelFolderError
from model.generate import main


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


def test_every_registered_family_implements_the_written_down_interface():
    from model.families import FAMILIES, Family

    for name, family in FAMILIES.items():
        assert isinstance(family, Family) and family.name == name


def test_no_caller_outside_the_families_branches_on_a_family_name():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    branch = re.compile(r"family\.name\s*[!=]=|\.name\s*[!=]=\s*[\"'](wan|cogvideox)[\"']")
    offenders = [f"{path.relative_to(root)}:{n}" for folder in ("manifests", "model", "curation", "training", "benchmarks")
                 for path in sorted((root / folder).rglob("*.py")) if path.name != "families.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]  # fmt: skip
    assert not offenders
