"""Tests of `training/engine.py`: the learning-rate schedule and the DeepSpeed config built from ours."""

from __future__ import annotations

from training.engine import warmup_then_constant


def test_learning_rate_warms_up_linearly_then_stays_constant():
    assert [warmup_then_constant(100, s) for s in (0, 50, 100, 5000)] == [0.0, 0.5, 1.0, 1.0]
    assert warmup_then_constant(0, 0) == 1.0


def test_the_deepspeed_config_takes_batch_clipping_and_precision_from_ours_and_the_rest_from_its_json(tmp_path):
    import json

    from tests.support.training import CONFIG
    from training.config import load_config
    from training.engine import deepspeed_config

    extra = tmp_path / "ds.json"
    extra.write_text(json.dumps({"fp16": {"enabled": True}, "train_micro_batch_size_per_gpu": 99,
                                 "zero_optimization": {"stage": 0, "overlap_comm": True}}))  # fmt: skip
    config = load_config(CONFIG, [f"run.deepspeed_config={extra}", "optim.batch_size=2", "optim.max_grad_norm=0.5",
                                  "run.zero_stage=2", "run.precision=fp32"])  # fmt: skip
    ds = deepspeed_config(config)
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"] == {"stage": 2, "overlap_comm": True}  # the JSON's other keys are kept
    assert ds["bf16"] == {"enabled": False} and "fp16" not in ds  # bf16 or fp32 only
