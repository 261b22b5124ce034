"""Tests of `curation/config.py`: typed, validated configuration of the curation job: one section per
stage, one default per knob."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_renamed_flags_are_named_in_errors(tmp_path, capsys):
    from curation.run import main

    with pytest.raises(SystemExit):
        main(["--samples", "0", "--output", str(tmp_path)])
    assert "--samples: " in capsys.readouterr().err


def test_every_knob_is_a_flag_that_reaches_its_stage(tmp_path):
    from curation.run import parse_args

    config = parse_args(["--output", str(tmp_path), "--neighbors", "5", "--gemini-temperature", "0.7",
                         "--gemini-frames-per-shot", "6", "--embed-frames-per-shot", "12", "--gemini-max-reasks", "1"])  # fmt: skip
    assert config.combine.neighbors == 5
    assert config.annotate.temperature == 0.7 and config.annotate.max_reasks == 1  # what the annotator reads
    assert config.annotate.frames_per_shot == 6
    assert config.embed.frames_per_shot == 12
    dumped = config.model_dump(mode="json")  # what run.json records
    assert dumped["combine"]["neighbors"] == 5 and dumped["annotate"]["temperature"] == 0.7
    assert dumped["annotate"]["frames_per_shot"] == 6 and dumped["embed"]["frames_per_shot"] == 12


def test_flags_are_derived_from_the_config_fields_one_to_one(tmp_path):
    """Every config field has exactly one flag, every flag reaches its field, and the defaults live
    only in the fields (a flag not given leaves the field's default)."""
    from curation.config import CurationConfig, flags
    from curation.run import parse_args

    known = flags()
    assert len(set(known.values())) == len(known)  # one flag per field, none shared
    assert known["combine.min_relevance"] == "--min-relevance" and known["annotate.rpm"] == "--gemini-rpm"
    assert known["shots.detector.kind"] == "--detector" and known["sample_videos"] == "--samples"
    assert parse_args(["--output", str(tmp_path)]) == CurationConfig(output=tmp_path)
    config = parse_args(["--output", str(tmp_path), "--min-relevance", "0.8", "--no-retry-failed", "--detector",
                         "content", "--gemini-price", "0.3,2.5", "--embed-frames-from", "source"])  # fmt: skip
    assert config.combine.min_relevance == 0.8 and config.retry_failed is False
    assert config.shots.detector.kind == "content" and config.annotate.price == (0.3, 2.5)
    assert config.embed.frames_from == "source"


def test_a_yaml_config_file_with_flags_over_it(tmp_path, capsys):
    from curation.run import main, parse_args

    path = tmp_path / "curation.yaml"
    path.write_text("combine:\n  scenes: 2\n  min_relevance: 1.0\nshots:\n  detector:\n    kind: content\n")
    config = parse_args(["--config", str(path), "--output", str(tmp_path / "out"), "--min-relevance", "0.2"])
    assert config.combine.scenes == 2 and config.combine.min_relevance == 0.2  # the flag wins
    assert config.shots.detector.kind == "content"
    path.write_text("combine:\n  scenes: 1\n")
    with pytest.raises(SystemExit):
        main(["--config", str(path), "--output", str(tmp_path / "out")])
    assert "--scenes: " in capsys.readouterr().err


def test_the_readme_config_example_is_a_valid_config(tmp_path):
    """The YAML in the curation manual's configuration section parses into the config the job would run with."""

    import yaml

    from curation.config import CurationConfig

    manual = (Path(__file__).resolve().parents[2] / "docs" / "curation.md").read_text()
    block = re.search(r"## Configuration\n.*?```yaml\n(.*?)```", manual, re.S).group(1)
    tree = yaml.safe_load(block)
    weights = tmp_path / "viclip.pth"
    weights.write_bytes(b"")  # the example's checkpoint path, made to exist
    tree["embed"]["viclip_checkpoint"] = str(weights)
    config = CurationConfig.model_validate(tree | {"output": str(tmp_path / "out")})
    assert config.shots.detector.kind == "content" and config.embed.kind == "viclip"
    assert config.combine.scenes == 2 and config.annotate.rpm == 30
