"""Tests of `training/config.py`: typed training configuration: a YAML file plus `section.key=value`
overrides, validated up front."""

from __future__ import annotations

import pytest

from tests.support import REPO
from tests.support.training import CONFIG
from training.config import load_config


@pytest.mark.parametrize("name", ["pretrain.yaml", "sft.yaml"])
def test_shipped_configs_reproduce_the_official_launchers(name):
    config = load_config(REPO / "training" / "configs" / name)
    optim = config.optim
    assert (optim.lr, optim.betas, optim.weight_decay, optim.eps, optim.max_grad_norm, optim.warmup_steps) == (
        1e-5, (0.9, 0.999), 3e-2, 1e-10, 0.05, 100)  # fmt: skip
    assert config.data.caption_dropout == 0.0 and config.data.max_stride == 3 and config.data.frame_window == "official"
    assert config.objective.cond_prob == (0.5 if config.data.stage == "sft" else 0.0)


def test_config_is_validated_with_the_field_named(tmp_path):
    with pytest.raises(ValueError, match=r"data.num_frames: .*4k\+1"):
        load_config(CONFIG, ["data.num_frames=10"])
    with pytest.raises(ValueError, match="optim.lr"):
        load_config(CONFIG, ["optim.lr=-1"])
    with pytest.raises(ValueError, match="cond_prob applies to SFT"):
        load_config(CONFIG, ["objective.cond_prob=0.5"])
    with pytest.raises(ValueError, match=r"run.max_stpes: unknown key \(did you mean run.max_steps\?\)"):
        load_config(CONFIG, ["run.max_stpes=3"])
    config = load_config(CONFIG, ["optim.lr=2e-4", "data.scenes=3"])
    assert config.optim.lr == 2e-4 and config.data.scenes == 3


def test_every_shipped_config_validates_and_the_lora_ones_train_adapters():
    from pathlib import Path

    from training.config import load_config

    folder = Path(__file__).resolve().parents[2] / "training" / "configs"
    configs = {p.name: load_config(p) for p in sorted(folder.glob("*.yaml"))}
    lora = {name for name, config in configs.items() if config.model.lora is not None}
    assert lora == {"cogvideox_lora_sft.yaml", "wan14b_lora_sft.yaml", "wan22_a14b_lora_sft.yaml",
                    "tiny_lora_sft.yaml", "tiny_wan_lora_sft.yaml"}  # fmt: skip
    assert configs["wan22_a14b_lora_sft.yaml"].model.expert == "transformer"  # transformer_2 in its second run
