"""Tests of `training/checkpoint.py`: DeepSpeed checkpoints that resume exactly, survive a kill
mid-save, and never run code on load."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch

from model.tiny import build_tiny_model
from tests.support.training import CONFIG, config_for
from training.train import main, train

CHECKPOINT_DAMAGE = {
    "trainer state is a list": ("trainer_state.json", []),
    "marker files is a list": ("complete.json", {"step": 4, "files": ["mp_rank_00_model_states.pt"]}),
    "rng of the wrong shape": ("rng_rank0.json", {"python": [3, [1, 2], None], "numpy": [], "torch": [1]}),
    "trainer state step is text": ("trainer_state.json", {"step": "4", "consumed": 4}),
}


class Planted:
    """Unpickling this runs a shell command: what a hostile file in a run folder would do."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):

        return (os.system, (f"touch {self.sentinel}",))


@pytest.mark.slow
def test_wrongly_shaped_checkpoint_json_falls_back_to_the_older_checkpoint(manifest, tmp_path, capsys):  # noqa: F811
    import json

    from tests.support.training import config_for
    from training.train import train

    model = build_tiny_model(tmp_path / "model")
    overrides = ["data.stage=sft", "data.scenes=3", "run.save_every=2", "optim.lr=1e-3"]
    straight = [
        h["loss"] for h in train(config_for(manifest, model, tmp_path / "a", "run.max_steps=4", *overrides))["history"]
    ]
    base = tmp_path / "base"
    train(config_for(manifest, model, base, "run.max_steps=4", *overrides))
    for case, (name, payload) in CHECKPOINT_DAMAGE.items():
        run = tmp_path / case.replace(" ", "-")
        shutil.copytree(base, run)
        (run / "checkpoints" / "step_4" / name).write_text(json.dumps(payload))
        if name != "complete.json":  # keep the marker's recorded size true: the damage is the shape
            marker = json.loads((run / "checkpoints" / "step_4" / "complete.json").read_text())
            marker["files"][name] = (run / "checkpoints" / "step_4" / name).stat().st_size
            (run / "checkpoints" / "step_4" / "complete.json").write_text(json.dumps(marker))
        capsys.readouterr()
        history = train(config_for(manifest, model, run, "run.max_steps=4", *overrides))["history"]
        out = capsys.readouterr().out
        assert "resumed from step_2; newer checkpoints could not be loaded" in out and name in out, case
        assert [h["loss"] for h in history] == straight, case


def test_a_planted_pickle_is_refused_and_runs_nothing(tmp_path):
    from training.checkpoint import CheckpointError, safe_load

    sentinel = tmp_path / "pwned"
    evil = tmp_path / "mp_rank_00_model_states.pt"
    torch.save({"module": {}, "payload": Planted(sentinel)}, evil)
    with pytest.raises(CheckpointError, match=r"mp_rank_00_model_states\.pt: refused to load"):
        safe_load(evil)
    assert not sentinel.exists()
    truncated = tmp_path / "truncated.pt"
    torch.save({"w": torch.ones(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="damaged"):
        safe_load(truncated)


def test_rng_state_round_trips_through_json():
    import random

    from training.checkpoint import restore_rng, rng_state

    state = json.loads(json.dumps(rng_state()))
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


@pytest.mark.slow
def test_killed_save_damage_and_planted_files_resume_from_the_last_intact_checkpoint(manifest, tiny_model, tmp_path):
    import shutil

    overrides = ["data.stage=sft", "data.scenes=3", "run.save_every=2", "run.keep_last=3", "optim.lr=1e-3"]
    straight = train(config_for(manifest, tiny_model, tmp_path / "a", "run.max_steps=6", *overrides))["history"]
    run = tmp_path / "b"
    train(config_for(manifest, tiny_model, run, "run.max_steps=4", *overrides))
    checkpoints = run / "checkpoints"
    # A save killed midway: step_6 has files but no commit marker.
    shutil.copytree(checkpoints / "step_4", checkpoints / "step_6")
    (checkpoints / "step_6" / "complete.json").unlink()
    # The newest complete checkpoint is damaged: a file truncated after its marker was written.
    model_file = checkpoints / "step_4" / "mp_rank_00_model_states.pt"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    # A planted folder without a marker is never opened.
    sentinel = tmp_path / "pwned"
    (checkpoints / "step_99").mkdir()
    torch.save({"payload": Planted(sentinel)}, checkpoints / "step_99" / "mp_rank_00_model_states.pt")
    resumed = train(config_for(manifest, tiny_model, run, "run.max_steps=6", *overrides))["history"]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight]  # from step_2, exactly
    assert not sentinel.exists()
    # With a forged marker the planted file is loaded through the allow-list, and refused.
    forged = checkpoints / "step_100"
    shutil.copytree(checkpoints / "step_6", forged)
    torch.save({"payload": Planted(sentinel)}, forged / "mp_rank_00_model_states.pt")
    marker = json.loads((forged / "complete.json").read_text())
    marker["files"] = {p.name: p.stat().st_size for p in forged.iterdir() if p.name != "complete.json"}
    (forged / "complete.json").write_text(json.dumps(marker))
    args = ["--config", str(CONFIG), f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={run}",
            "run.max_steps=8", *overrides, "data.allow_uncaptioned=false", "data.caption_dropout=0"]  # fmt: skip
    assert main(args) == 2
    assert not sentinel.exists()
