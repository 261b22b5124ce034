"""Tests of `training/telemetry.py`: throughput and data-wait accounting, TensorBoard scalars on rank 0."""

from __future__ import annotations

import time

import torch

from training.telemetry import Metrics


def test_throughput_and_data_wait_are_per_logging_window_and_reset_after_it(tmp_path):
    metrics = Metrics(tmp_path / "tb", enabled=True, total_steps=4, start_step=0)
    with metrics.timing_data():
        time.sleep(0.02)
    metrics.count_batch(batch_size=2, video_tokens=100, text=torch.zeros(2, 12, 8), world=2)
    assert metrics.samples == 4 and metrics.tokens == (100 + 12) * 2 * 2
    assert metrics.step(1, {"loss": 0.5}, log=False) == {}  # between logs nothing is reported
    logged = metrics.step(2, {"loss": 0.4}, log=True)
    assert logged["loss"] == 0.4 and logged["samples_per_s"] > 0 and 0 < logged["data_wait_fraction"] <= 1
    assert metrics.samples == metrics.tokens == 0 and metrics.data_wait == 0.0  # a new window
    metrics.scalars(2, {"val/sca": 1.0})
    metrics.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))  # TensorBoard got the scalars


def test_other_ranks_count_but_write_nothing(tmp_path):
    metrics = Metrics(tmp_path / "tb", enabled=False, total_steps=4, start_step=0)
    metrics.add(3, 30)
    assert metrics.step(1, {"loss": 1.0}, log=True)["samples_per_s"] > 0
    metrics.close()
    assert not (tmp_path / "tb").exists()
