"""Tests of `training/trainer.py`: the trainer: components built from one config, and a loop that
reads like the algorithm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from manifests import read_table, write_part
from model.cogvideox import Mask2DiTTransformer3DModel
from tests.support.training import CONFIG, config_for
from training.data import load_samples
from training.train import train

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "trainer_reference.json"


REFERENCE_RUNS = {
    "pretrain": ["data.stage=pretrain", "data.scenes=2", "run.max_steps=4", "run.save_every=2", "optim.lr=1e-3"],
    "sft": ["data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5", "run.max_steps=4", "run.save_every=2",
            "optim.lr=1e-3"],
}  # fmt: skip


FROM_SHOTS = ["data.scene_frames=from_shots", "data.num_frames=49", "data.min_frames=9", "data.stage=pretrain",
              "data.scenes=2", "optim.batch_size=2", "optim.lr=1e-3", "run.save_every=2"]  # fmt: skip


@pytest.mark.slow
def test_both_stages_train_on_cpu_loss_falls_and_export_loads(manifest, tiny_model, tmp_path):
    from model.cogvideox_pipeline import Mask2DiTPipeline

    # A tiny overfit set: one video's shots, one scene per sample.
    overfit = tmp_path / "overfit"
    shots = read_table(manifest, "shots")
    first = shots["video_id"].iloc[0]
    write_part(overfit, "shots", first, shots[shots["video_id"] == first])
    for table in ("shot_captions", "combinations", "annotations"):
        rows = read_table(manifest, table)
        write_part(overfit, table, first, rows[rows["video_id"] == first])
    pretrain = config_for(overfit, tiny_model, tmp_path / "pretrain", "run.max_steps=60", "optim.lr=3e-3",
                          "data.scenes=1", "run.save_every=30")  # fmt: skip
    losses = [h["loss"] for h in train(pretrain)["history"]]
    assert np.mean(losses[-15:]) < 0.9 * np.mean(losses[:15]), losses
    logged = [h["logged"] for h in json.loads((tmp_path / "pretrain" / "history.json").read_text()) if "logged" in h]
    assert {"samples_per_s", "tokens_per_s", "data_wait_fraction", "grad_norm", "lr", "peak_memory_gib",
            "loss_scene_0"} <= logged[-1].keys()  # fmt: skip
    assert any((tmp_path / "pretrain" / "tensorboard").iterdir())
    export = tmp_path / "pretrain" / "export"
    sft = config_for(overfit, tiny_model, tmp_path / "sft", "data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5",
                     f"model.transformer={export / 'transformer'}", "run.max_steps=60", "optim.lr=3e-3")  # fmt: skip
    losses = [h["loss"] for h in train(sft)["history"]]
    assert np.mean(losses[-15:]) < np.mean(losses[:15]), losses  # continues from the pretrained weights
    # The export is self-contained: no links into the base model folder, so it survives a move.
    assert not any(p.is_symlink() for p in (tmp_path / "sft" / "export").rglob("*"))
    moved = tmp_path / "elsewhere" / "export"
    moved.parent.mkdir()
    (tmp_path / "sft" / "export").rename(moved)
    pipe = Mask2DiTPipeline.from_pretrained(moved)
    pipe.set_progress_bar_config(disable=True)
    result = pipe(["a man", "a dog"], height=32, width=32, num_frames=9, num_inference_steps=2, output_type="latent")
    assert result.latents.shape == (1, 6, 4, 8, 8)


@pytest.mark.slow
def test_resumed_run_continues_exactly(manifest, tiny_model, tmp_path):
    overrides = ["data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5", "run.save_every=4", "optim.lr=1e-3"]
    straight = train(config_for(manifest, tiny_model, tmp_path / "a", "run.max_steps=8", *overrides))["history"]
    train(config_for(manifest, tiny_model, tmp_path / "b", "run.max_steps=4", *overrides))
    resumed = train(config_for(manifest, tiny_model, tmp_path / "b", "run.max_steps=8", *overrides))["history"]
    assert [h["step"] for h in resumed] == list(range(1, 9))  # history.json continues, not restarts
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight]
    assert resumed[-1]["consumed"] == straight[-1]["consumed"] == 8
    assert json.loads((tmp_path / "b" / "history.json").read_text())[0]["step"] == 1
    tags = sorted(p.name for p in (tmp_path / "b" / "checkpoints").glob("step_*"))
    assert tags == ["step_4", "step_8"]


@pytest.mark.slow
def test_two_ranks_under_torchrun_share_the_stream_and_shard_the_optimizer(manifest, tiny_model, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(CONFIG.parents[1] / "train.py"),
               "--config", str(CONFIG), f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={out}",
               "run.max_steps=3", "data.allow_uncaptioned=false"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=CONFIG.parents[2])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert [h["consumed"] for h in history] == [2, 4, 6]  # one sample per rank per step
    shards = sorted(p.name for p in (out / "checkpoints" / "step_3").glob("zero_pp_rank_*_optim_states.pt"))
    assert len(shards) == 2


@pytest.mark.slow
def test_the_tiny_configs_train_to_the_recorded_losses_step_for_step_and_resume_onto_them(
    manifest, tiny_model, tmp_path
):
    """The trainer's losses on the tiny config, pretrain and SFT, recorded from the trainer before its
    refactor into components (tests/data/trainer_reference.json), then a resumed run of each."""
    import os

    losses = {}
    for name, overrides in REFERENCE_RUNS.items():
        losses[name] = [
            h["loss"] for h in train(config_for(manifest, tiny_model, tmp_path / name, *overrides))["history"]
        ]
        more = [o.replace("run.max_steps=4", "run.max_steps=6") for o in overrides]
        resumed = train(config_for(manifest, tiny_model, tmp_path / name, *more))["history"]
        losses[f"{name}-resumed"] = [h["loss"] for h in resumed]
    if os.environ.get("MASK2DIT_WRITE_REFERENCE"):
        REFERENCE.write_text(json.dumps(losses, indent=1))
    expected = json.loads(REFERENCE.read_text())
    for name, values in expected.items():
        np.testing.assert_allclose(losses[name], values, rtol=1e-5, err_msg=name)


@pytest.mark.slow
def test_unequal_scene_lengths_train_batched_by_layout_and_resume_exactly(manifest, tiny_model, tmp_path, monkeypatch):

    seen = []
    forward = Mask2DiTTransformer3DModel.forward

    def spy(self, hidden_states, *args, scene_frames=None, **kwargs):
        seen.append((tuple(scene_frames), hidden_states.shape[0]))
        return forward(self, hidden_states, *args, scene_frames=scene_frames, **kwargs)

    monkeypatch.setattr(Mask2DiTTransformer3DModel, "forward", spy)
    config = config_for(manifest, tiny_model, tmp_path / "a", "run.max_steps=4", *FROM_SHOTS)
    samples, report = load_samples(config.data)
    lengths = {scene.frames for sample in samples for scene in sample}
    assert len(lengths) > 1 and all((f - 1) % 4 == 0 and 9 <= f <= 49 for f in lengths)
    assert any("scene lengths" in line for line in report.lines())
    straight = train(config)["history"]
    layouts = {layout for layout, _ in seen}
    assert len(layouts) > 1  # the model received per-scene latent frame counts that differ
    latent_lengths = {(f - 1) // 4 + 1 for f in lengths}
    assert {frames for layout in layouts for frames in layout} <= latent_lengths
    train(config_for(manifest, tiny_model, tmp_path / "b", "run.max_steps=2", *FROM_SHOTS))
    seen.clear()
    resumed = train(config_for(manifest, tiny_model, tmp_path / "b", "run.max_steps=4", *FROM_SHOTS))["history"]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight]


LORA = ["model.lora.rank=4", "model.lora.alpha=8", "data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5",
        "optim.lr=5e-3", "run.save_every=4"]  # fmt: skip


def _checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_lora_trains_adapters_only_checkpoints_small_resumes_exactly_and_exports_three_ways(
    manifest, tiny_model, tmp_path
):
    import torch
    from safetensors.torch import load_file

    from model.lora import COMFYUI_FILE, DIFFUSERS_FILE, load_lora

    base = {
        k: v.clone()
        for k, v in Mask2DiTTransformer3DModel.from_pretrained(tiny_model / "transformer").state_dict().items()
    }
    straight = train(
        config_for(manifest, tiny_model, tmp_path / "a", "run.max_steps=8", "model.lora.merge=true", *LORA)
    )
    losses = [h["loss"] for h in straight["history"]]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    train(config_for(manifest, tiny_model, tmp_path / "b", "run.max_steps=4", *LORA))  # killed at 4, resumed to 8
    resumed = train(config_for(manifest, tiny_model, tmp_path / "b", "run.max_steps=8", *LORA))
    assert [h["loss"] for h in resumed["history"]] == losses
    a, b = (load_file(tmp_path / run / "export" / "lora" / DIFFUSERS_FILE) for run in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the same adapters
    assert not (tmp_path / "a" / "export" / "lora" / COMFYUI_FILE).exists()  # CogVideoX: diffusers' file only
    # The base is frozen: the checkpoint leaves it out, and a full run's checkpoint is several times larger.
    full = tmp_path / "full"
    train(config_for(manifest, tiny_model, full, "run.max_steps=4", *LORA[2:]))
    lora_size = _checkpoint_bytes(tmp_path / "b" / "checkpoints" / "step_8")
    assert lora_size < 0.5 * _checkpoint_bytes(full / "checkpoints" / "step_4")
    # The merged export is a plain transformer: the base weights plus the adapters, which `load_lora`
    # (generate --lora) reproduces from the adapter file on the untouched base.
    merged = Mask2DiTTransformer3DModel.from_pretrained(tmp_path / "a" / "export" / "transformer")
    live = Mask2DiTTransformer3DModel.from_pretrained(tiny_model / "transformer")
    assert all(torch.equal(live.state_dict()[k], base[k]) for k in base)  # the base folder never changed
    load_lora(live, tmp_path / "a" / "export" / "lora")
    for key, value in merged.state_dict().items():
        assert torch.allclose(live.state_dict()[key], value, atol=1e-6), key
    changed = [k for k in base if not torch.equal(base[k], merged.state_dict()[k])]
    assert changed and all(k.endswith("weight") for k in changed)
