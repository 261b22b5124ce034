"""Tests of `training/identity.py`: what a run folder holds: the identity of the training it resumes,
so another training never continues it."""

from __future__ import annotations

import shutil

import pytest

from manifests import read_table, write_part
from tests.support.training import CONFIG


def train_cli(*args) -> int:
    from training.train import main

    return main(["--config", str(CONFIG), "data.allow_uncaptioned=false", "data.caption_dropout=0", *args])


@pytest.mark.slow
def test_resuming_another_training_is_refused_and_a_finished_run_trains_nothing(manifest, tiny_model, tmp_path, capsys):  # noqa: F811
    run = tmp_path / "run"
    common = [f"model.path={tiny_model}", f"run.output={run}", "data.stage=sft", "data.scenes=3", "run.save_every=2"]
    assert train_cli(f"data.manifest={manifest}", "run.max_steps=4", *common) == 0
    export = run / "export" / "transformer" / "config.json"
    stamp = export.stat().st_mtime_ns
    # Other data, the same run.output: the trap of the README's import example.
    other = tmp_path / "other"
    shutil.copytree(manifest, other)
    notes = read_table(other, "annotations")
    notes["captions"] = [[f"another caption {i}" for i, _ in enumerate(c)] for c in notes["captions"]]
    for part in (other / "annotations.parquet").glob("part-*.parquet"):
        part.unlink()
    for video_id, rows in notes.groupby("video_id"):
        write_part(other, "annotations", video_id, rows)
    capsys.readouterr()
    assert train_cli(f"data.manifest={other}", "run.max_steps=4", *common) == 2
    err = capsys.readouterr().err
    assert "holds another training" in err and "manifest:" in err and "manifest_fingerprint" in err
    assert "new run.output" in err and "run.resume=false" in err
    assert export.stat().st_mtime_ns == stamp  # the old run's export is untouched
    # The same training again: finished, says so, trains nothing, leaves the export alone.
    assert train_cli(f"data.manifest={manifest}", "run.max_steps=4", *common) == 0
    out = capsys.readouterr().out
    assert "already finished: step 4 of 4" in out and export.stat().st_mtime_ns == stamp
    # Extended: it says where it resumed, and ends with a summary.
    assert train_cli(f"data.manifest={manifest}", "run.max_steps=6", *common) == 0
    out = capsys.readouterr().out
    assert "resumed from step 4 of 6" in out
    assert "trained steps 5-6 of 6" in out and "final loss" in out and "tensorboard --logdir" in out
    # run.resume=false starts over in the same folder, with the other data.
    assert train_cli(f"data.manifest={other}", "run.max_steps=2", "run.resume=false", *common) == 0


def test_a_run_whose_identity_file_was_deleted_is_not_resumed_with_other_settings(manifest, tiny_model, tmp_path,  # noqa: F811
                                                                                 capsys):  # fmt: skip
    from training.identity import IDENTITY
    from training.train import main

    out = tmp_path / "run"
    args = ["--config", str(CONFIG), f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={out}",
            "data.allow_uncaptioned=false", "data.caption_dropout=0", "run.max_steps=2", "run.save_every=2"]  # fmt: skip
    assert main(args) == 0
    (out / IDENTITY).unlink()
    assert main([*args, "run.max_steps=4", "optim.lr=5e-3"]) == 2
    err = capsys.readouterr().err
    assert f"has checkpoints but its run identity ({IDENTITY}) is missing" in err and "run.resume=false" in err
    assert main([*args, "run.max_steps=4", "optim.lr=5e-3", "run.resume=false"]) == 0  # starting over is allowed
