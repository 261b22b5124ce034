"""The two-stage trainer on CPU through DeepSpeed, on a manifest curated from generated videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from diffusers import CogVideoXDDIMScheduler

from curation.samples import write_synthetic_video
from manifests import read_table, write_part
from model.objectives import FlowMatching, VPrediction
from model.tiny import build_tiny_model
from training.config import load_config
from training.data import DataError, PretrainSampler, Scene, load_samples
from training.objective import conditional_mask
from training.train import main, train

CONFIG = Path(__file__).resolve().parent.parent / "training" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, ray_local):
    """Curated from 4 generated videos, with hand-written captions marked ok (as Gemini would return)."""
    from curation.run import main as curate

    root = tmp_path_factory.mktemp("train")
    videos = [write_synthetic_video(root / "videos" / f"v{i}.mp4", [60, 72, 66], fps=24.0, size=(64, 48), seed=10 + i)
              for i in range(4)]  # fmt: skip
    out = root / "manifest"
    assert curate(["--input", str(root / "videos"), "--output", str(out), "--within", "video",
                   "--min-relevance", "-10", "--min-shot-frames", "25", "--caption-shots"]) == 0  # fmt: skip
    shots = read_table(out, "shots")
    for video_id, part in shots.groupby("video_id"):
        write_part(out, "shot_captions", video_id, [
            {"shot_id": s, "video_id": video_id, "caption": f"shot {i} of a man walking", "status": "ok"}
            for i, s in enumerate(part["shot_id"])])  # fmt: skip
    combos = read_table(out, "combinations")
    for video_id, part in combos.groupby("video_id"):
        write_part(out, "annotations", video_id, [
            {"combination_id": c.combination_id, "video_id": video_id, "shot_ids": list(c.shot_ids),
             "captions": [f"Actor1 (a man) scene {k}" for k in range(len(c.shot_ids))], "status": "ok"}
            for c in part.itertuples()])  # fmt: skip
    assert len(videos) == 4 and len(combos) >= 2
    return out


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


def config_for(manifest, tiny_model, output, *overrides):
    return load_config(CONFIG, [f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={output}",
                                "data.allow_uncaptioned=false", "data.caption_dropout=0", *overrides])  # fmt: skip


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


def test_bad_manifests_fail_fast_naming_the_problem(tmp_path, manifest, tiny_model, capsys):
    bad = tmp_path / "bad"
    (bad / "shots.parquet").mkdir(parents=True)
    pq.write_table(pa.table({"video_id": ["a"]}), bad / "shots.parquet" / "part-a.parquet")
    (bad / "shot_captions.parquet").mkdir()
    assert main(["--config", str(CONFIG), f"data.manifest={bad}", "data.allow_uncaptioned=false",
                 f"run.output={tmp_path / 'run'}"]) == 2  # fmt: skip
    assert "missing column 'shot_id'" in capsys.readouterr().err
    with pytest.raises(DataError, match="no shot_captions.parquet: run the curation job with --caption-shots"):
        load_samples(load_config(CONFIG, [f"data.manifest={tmp_path / 'empty'}", "data.allow_uncaptioned=false"]).data)
    config = config_for(manifest, tiny_model, tmp_path / "r", "data.num_frames=401")
    with pytest.raises(DataError, match=r"(?s)0 usable .*shot shorter than 401 frames"):
        load_samples(config.data)


def scenes_of(videos: int, shots: int) -> list[list[Scene]]:
    return [
        [Scene({"video_id": f"v{v}", "shot_id": f"v{v}s{s}"}, "", 0, 1)] for v in range(videos) for s in range(shots)
    ]


def test_pretrain_sampler_never_repeats_a_source_when_avoidable():
    sampler = PretrainSampler(scenes_of(videos=5, shots=3), scenes=3, seed=0)
    for index in range(500):
        sources = [s.shot["video_id"] for s in sampler(index)]
        assert len(set(sources)) == 3
    assert sampler(7) == sampler(7)  # a pure function of the index
    few = PretrainSampler(scenes_of(videos=2, shots=4), scenes=3, seed=0)
    assert all(len({s.shot["video_id"] for s in few(i)}) == 2 for i in range(100))  # one repeat, no more


@pytest.mark.parametrize("backbone", ["cogvideox", "wan"])
def test_conditional_task_ratio_and_loss_touch_only_target_scenes(backbone):
    masks = conditional_mask(list(range(4000)), 3, 0.5, seed=1)
    assert abs(masks[:, 0].float().mean().item() - 0.5) < 0.03
    assert (masks[:, 2] == 0).all() and (masks[:, 0] == masks[:, 1]).all()  # earlier scenes clean, last is the target
    if backbone == "cogvideox":
        objective = VPrediction(CogVideoXDDIMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True))
    else:
        objective = FlowMatching(shift=5.0)
    latents = torch.randn(2, 6, 4, 4, 4, requires_grad=True)
    clean = torch.tensor([[True, True, False], [False, False, False]])
    inputs = objective.make_inputs(latents, [2, 2, 2], clean, torch.Generator().manual_seed(0))
    assert torch.equal(inputs.noisy[0, :4], latents[0, :4]) and not torch.equal(inputs.noisy[1, :4], latents[1, :4])
    output = torch.randn(2, 6, 4, 4, 4, requires_grad=True)
    loss, _ = objective.loss(output, inputs, [2, 2, 2])
    loss.backward()
    assert output.grad[0, :4].abs().sum() == 0 and output.grad[0, 4:].abs().sum() > 0 and output.grad[1].abs().sum() > 0


@pytest.mark.slow
def test_both_stages_train_on_cpu_loss_falls_and_export_loads(manifest, tiny_model, tmp_path):
    from model.pipeline import Mask2DiTPipeline

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


def test_sft_uses_only_ok_annotations(manifest, tiny_model, tmp_path):
    config = config_for(manifest, tiny_model, tmp_path / "r", "data.stage=sft", "data.scenes=3")
    samples, report = load_samples(config.data)
    notes = read_table(manifest, "annotations")
    assert report.usable == len(samples) == int((notes["status"] == "ok").sum())
    assert all(s.caption.startswith("Actor1 (a man)") for sample in samples for s in sample)


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


class Planted:
    """Unpickling this runs a shell command: what a hostile file in a run folder would do."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.sentinel}",))


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


def test_unreadable_sources_are_skipped_deterministically_and_counted(manifest, tmp_path):
    import shutil

    from training.data import SceneDataset
    from training.trainer import SkipCounter

    # A copy of the manifest whose first video was truncated after curation.
    copy = tmp_path / "manifest"
    shutil.copytree(manifest, copy)
    shots = read_table(copy, "shots")
    broken = Path(shots["source_path"].iloc[0])
    moved = tmp_path / "videos"
    shutil.copytree(broken.parent, moved)
    shots["source_path"] = [str(moved / Path(p).name) for p in shots["source_path"]]
    for part in (copy / "shots.parquet").glob("part-*.parquet"):
        part.unlink()
    write_part(copy, "shots", "all", shots)
    victim = moved / broken.name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    config = config_for(copy, Path("unused"), tmp_path / "r", "data.stage=pretrain", "data.scenes=2").data
    samples, _ = load_samples(config)
    dataset = SceneDataset(config, samples, seed=0)
    items = [dataset[i] for i in range(12)]
    assert any(item["skipped"] for item in items)
    assert all(len(item["frames"]) == 2 and item["frames"][0].shape[0] == 9 for item in items)
    again = [dataset[i] for i in range(12)]
    assert [i["keys"] for i in items] == [i["keys"] for i in again]  # the same substitutes every time
    assert all(victim.name in reason for item in items for reason in item["skipped"])
    counter = SkipCounter(max_fraction=0.1, consumed=0, grace=2)
    with pytest.raises(DataError, match="could not be read"):
        for step in range(10):
            counter.add({"index": [step], "skipped": [["x: unreadable"]]}, step, verbose=False)


def test_non_finite_numbers_are_named_by_table_row_and_column(manifest, tmp_path):
    """Our writer refuses NaN in required columns; a hand-edited table can still hold infinities."""
    import shutil

    copy = tmp_path / "manifest"
    shutil.copytree(manifest, copy)
    shots = read_table(copy, "shots")
    shots.loc[2, "fps"] = float("inf")
    for part in (copy / "shots.parquet").glob("part-*.parquet"):
        part.unlink()
    write_part(copy, "shots", "all", shots)
    config = config_for(copy, Path("unused"), tmp_path / "r").data
    with pytest.raises(DataError, match=r"table 'shots' row 2 .*column 'fps'"):
        load_samples(config)


REFERENCE = Path(__file__).resolve().parent / "data" / "trainer_reference.json"
REFERENCE_RUNS = {
    "pretrain": ["data.stage=pretrain", "data.scenes=2", "run.max_steps=4", "run.save_every=2", "optim.lr=1e-3"],
    "sft": ["data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5", "run.max_steps=4", "run.save_every=2",
            "optim.lr=1e-3"],
}  # fmt: skip


@pytest.mark.slow
def test_refactor_keeps_losses_step_for_step(manifest, tiny_model, tmp_path):
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


FROM_SHOTS = ["data.scene_frames=from_shots", "data.num_frames=49", "data.min_frames=9", "data.stage=pretrain",
              "data.scenes=2", "optim.batch_size=2", "optim.lr=1e-3", "run.save_every=2"]  # fmt: skip


@pytest.mark.slow
def test_unequal_scene_lengths_train_batched_by_layout_and_resume_exactly(manifest, tiny_model, tmp_path, monkeypatch):
    from model.transformer import Mask2DiTTransformer3DModel

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


def test_layout_batches_are_uniform_deterministic_and_never_starve_a_rare_layout():
    from training.data import LayoutBatchSampler

    class Fake:
        config = type("C", (), {"scene_frames": "from_shots"})()

        def layout(self, draw):  # 1 draw in 10, at random as real draws are, has the rare layout
            return (9, 17) if np.random.default_rng(draw).random() < 0.1 else (17, 17)

    def batches(start, count):
        sampler = iter(LayoutBatchSampler(Fake(), start, rank=0, world=1, batch_size=4))
        return [next(sampler) for _ in range(count)]

    first = batches(0, 50)
    assert first == batches(0, 50)  # a pure function of the stream position
    assert all(len({Fake().layout(draw) for _, draw in batch}) == 1 for batch in first)
    rare = [batch for batch in first if Fake().layout(batch[0][1]) == (9, 17)]
    assert rare and sum(len(batch) for batch in rare) > 2 * len(
        rare
    )  # the rare layout trains, in (mostly) full batches
    positions = [index for batch in first for index, _ in batch]
    assert positions == sorted(set(positions)) and set(positions) <= set(range(200))  # each position at most once
    assert batches(8, 3) == first[2:5]  # resuming at sample 8 continues with batch 2


def test_the_loss_weighs_every_generated_frame_once():
    from model import scene_diffusion_loss

    prediction, target = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    loss, per_scene = scene_diffusion_loss(prediction, target, [1, 3])
    assert loss.item() == pytest.approx(((prediction - target) ** 2).mean().item(), rel=1e-6)
    loss, _ = scene_diffusion_loss(prediction, target, [1, 3], clean_scenes=[0])
    assert loss.item() == pytest.approx(((prediction[:, 1:] - target[:, 1:]) ** 2).mean().item(), rel=1e-6)


@pytest.mark.slow
def test_precomputed_latents_train_like_online_encoding(manifest, tiny_model, tmp_path):
    from training.encoding import LatentStore
    from training.precompute import precompute

    overrides = ["data.frame_window=middle", "data.scene_frames=from_shots", "data.num_frames=17", "data.stage=sft",
                 "data.scenes=3", "run.max_steps=2"]  # fmt: skip
    store = tmp_path / "store"
    counts = precompute(config_for(manifest, tiny_model, tmp_path / "p", *overrides), store)
    assert counts["written"] > 0 and LatentStore(store).identity
    again = precompute(config_for(manifest, tiny_model, tmp_path / "p", *overrides), store)
    assert again["written"] == 0  # everything is already there
    history = train(config_for(manifest, tiny_model, tmp_path / "r", *overrides, f"data.precomputed={store}"))[
        "history"
    ]
    assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


WAN_CONFIG = CONFIG.parent / "tiny_wan.yaml"


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory):
    from model.tiny import build_tiny_wan

    return build_tiny_wan(tmp_path_factory.mktemp("model") / "tiny-wan")


def wan_config(manifest, model, output, *overrides):
    return load_config(WAN_CONFIG, [f"data.manifest={manifest}", f"model.path={model}", f"run.output={output}",
                                    "data.allow_uncaptioned=false", "data.caption_dropout=0", *overrides])  # fmt: skip


@pytest.mark.slow
def test_wan_chain_pretrain_sft_precompute_resume_generate_and_expand(manifest, tiny_wan, tmp_path, capsys):
    """The tiny chain on the Wan backbone, as for CogVideoX: curated manifest -> pretrain with unequal
    scenes (resumed exactly) -> SFT with the conditional task -> precomputed latents -> generate and
    expand with the CLI from the export."""
    from model.generate import main as generate
    from model.wan import Mask2DiTWanTransformer3DModel
    from training.precompute import precompute

    unequal = ["data.scene_frames=from_shots", "data.num_frames=17", "data.min_frames=9", "optim.batch_size=2",
               "run.save_every=2"]  # fmt: skip
    straight = train(wan_config(manifest, tiny_wan, tmp_path / "a", "run.max_steps=4", *unequal))["history"]
    train(wan_config(manifest, tiny_wan, tmp_path / "b", "run.max_steps=2", *unequal))
    resumed = train(wan_config(manifest, tiny_wan, tmp_path / "b", "run.max_steps=4", *unequal))["history"]
    assert [h["loss"] for h in resumed] == [h["loss"] for h in straight] and all(
        np.isfinite(h["loss"]) for h in straight
    )
    export = tmp_path / "a" / "export"
    trained = Mask2DiTWanTransformer3DModel.from_pretrained(export / "transformer")
    base = Mask2DiTWanTransformer3DModel.from_pretrained(tiny_wan / "transformer")
    assert any(not torch.equal(a, b) for a, b in zip(trained.parameters(), base.parameters()))

    sft = ["data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5", "run.max_steps=3", "optim.lr=1e-3"]
    history = train(wan_config(manifest, tiny_wan, tmp_path / "sft", *sft, f"model.transformer={export / 'transformer'}",
                               "validation.every=3", "validation.steps=2", "validation.prompts=[a man, a dog]"))["history"]  # fmt: skip
    assert len(history) == 3 and (tmp_path / "sft" / "validation" / "step_0000003" / "video.mp4").is_file()

    store = tmp_path / "store"
    middle = [*sft, "data.frame_window=middle", "run.max_steps=2"]
    assert precompute(wan_config(manifest, tiny_wan, tmp_path / "p", *middle), store)["written"] > 0
    from_store = train(wan_config(manifest, tiny_wan, tmp_path / "r", *middle, f"data.precomputed={store}"))["history"]
    assert len(from_store) == 2 and all(np.isfinite(h["loss"]) for h in from_store)
    # A stored scene is the Wan VAE's normalised latent of that scene's frames, with the key's seed.
    from manifests.frames import read_shot_frames
    from model.families import family_of
    from training.data import load_samples, resize_crop
    from training.encoding import LatentStore, scene_key, stable_seed

    config = wan_config(manifest, tiny_wan, tmp_path / "p", *middle)
    encoders = family_of(tiny_wan).encoders(tiny_wan, torch.device("cpu"), torch.float32, 16)
    scene = load_samples(config.data)[0][0][0]
    key = scene_key(scene.content_key, config.data, encoders.identity)
    frames = resize_crop(read_shot_frames(scene.shot, indices=scene.frame_offsets(config.data.num_frames)), 32, 32)
    expected = encoders.encode_frames(torch.from_numpy(frames)[None], stable_seed(key))[0]
    assert torch.allclose(LatentStore(store).get(key), expected, atol=1e-5)

    prompts, more = tmp_path / "p.json", tmp_path / "more.json"
    prompts.write_text('["a man walks into the room", "the man opens the door"]')
    more.write_text('["a dog runs"]')
    size = ["--height", "32", "--width", "32", "--num-frames", "9", "--steps", "2", "--dtype", "fp32"]
    story = tmp_path / "story"
    assert (
        generate(["--model", str(tmp_path / "sft" / "export"), "--prompts", str(prompts), "--out", str(story), *size])
        == 0
    )
    assert generate(["--model", str(tmp_path / "sft" / "export"), "--prompts", str(more), "--expand-from", str(story),
                     "--out", str(tmp_path / "story2"), *size]) == 0  # fmt: skip
    record = json.loads((tmp_path / "story2" / "generation.json").read_text())
    assert record["scene_frames"] == [3, 3, 3] and record["settings"]["family"] == "wan"
    assert (tmp_path / "story2" / "scene_02.mp4").is_file()
    out = capsys.readouterr().out
    assert "loading" in out and "generating" in out


@pytest.mark.slow
def test_wan22_a14b_trains_one_named_expert_and_exports_both(manifest, tmp_path):
    from model.tiny import build_tiny_wan
    from model.wan import Mask2DiTWanTransformer3DModel

    folder = build_tiny_wan(tmp_path / "a14b", layout="wan2.2-a14b")
    train(wan_config(manifest, folder, tmp_path / "low", "model.expert=transformer_2", "run.max_steps=2"))
    export = tmp_path / "low" / "export"

    def weights(path):
        return [p.detach() for p in Mask2DiTWanTransformer3DModel.from_pretrained(path).parameters()]

    assert all(torch.equal(a, b) for a, b in zip(weights(export / "transformer"), weights(folder / "transformer")))
    assert any(
        not torch.equal(a, b) for a, b in zip(weights(export / "transformer_2"), weights(folder / "transformer_2"))
    )
    assert json.loads((export / "model_index.json").read_text())["boundary_ratio"] == 0.875
