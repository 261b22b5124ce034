"""Tests of `training/interrupt.py`: Ctrl-C or SIGTERM stops a run at the next step boundary with a
checkpoint and one line saying how to resume; the resumed run's history keeps every step."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.support.training import CONFIG
from training.interrupt import StopRequests, ignore_interrupts_in_workers
from training.train import main
from training.trainer import Trainer


def test_a_first_signal_asks_to_stop_a_second_ctrl_c_stops_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with StopRequests(announce=False) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.agreed(device=None)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_data_loader_workers_leave_ctrl_c_to_the_training_process():
    before = signal.getsignal(signal.SIGINT)
    try:
        ignore_interrupts_in_workers(0)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_ctrl_c_saves_a_checkpoint_at_the_step_says_how_to_resume_and_history_keeps_every_step(
    manifest, tiny_model, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "run"
    args = ["--config", str(CONFIG), f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={out}",
            "data.allow_uncaptioned=false", "data.caption_dropout=0", "run.max_steps=6", "run.save_every=4"]  # fmt: skip
    log = Trainer.log

    def ctrl_c_after_step_3(self, results):
        log(self, results)
        if self.step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "log", ctrl_c_after_step_3)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted after step 3 of 6; checkpoint saved in" in err and "re-run the same command to resume" in err
    assert "Traceback" not in err
    interrupted = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in interrupted] == [1, 2, 3] and not (out / "export").exists()

    monkeypatch.setattr(Trainer, "log", log)
    assert main(args) == 0
    assert "resumed from step 3 of 6" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert [h["loss"] for h in history[:3]] == [h["loss"] for h in interrupted]


def test_a_nan_loss_stops_the_run_without_exporting_and_non_finite_settings_are_refused(
    manifest, tiny_model, tmp_path, capsys
):
    out = tmp_path / "run"
    base = ["--config", str(CONFIG), f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={out}",
            "data.allow_uncaptioned=false", "data.caption_dropout=0", "run.max_steps=6"]  # fmt: skip
    for setting in ("optim.lr=.inf", "objective.flow_shift=.inf", "optim.lr=nan"):
        assert main([*base, setting]) == 2
        assert "Input should be a finite number" in capsys.readouterr().err
    assert main([*base, "optim.lr=1e30", "optim.warmup_steps=0", "optim.max_grad_norm=1e30"]) == 2
    err = capsys.readouterr().err
    assert "error: the loss is nan at step" in err and "without saving this step or exporting" in err
    assert not (out / "export").exists()
