"""End to end on the Wan backbone: pretrain, SFT, precompute, resume, generate and expand; a Wan2.2
A14B expert trained alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.support.training import CONFIG
from training.config import load_config
from training.data import load_samples
from training.train import train

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
    from training.data import resize_crop
    from training.latent_store import LatentStore, scene_key, stable_seed

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


@pytest.mark.slow
def test_wan22_a14b_lora_one_adapter_per_expert_and_generate_with_both_equals_merged_folders(manifest, tmp_path):
    """The A14B LoRA config's two runs (one per expert, each on its own timestep range) give one
    adapter each, in diffusers' and ComfyUI's files; generate --lora/--lora-2 on the base folder
    equals generating with both experts merged into a folder."""
    import shutil

    from model.generate import main as generate
    from model.lora import COMFYUI_FILE, DIFFUSERS_FILE, merge_lora, read_lora
    from model.tiny import build_tiny_wan
    from model.wan import Mask2DiTWanTransformer3DModel

    folder = build_tiny_wan(tmp_path / "a14b", layout="wan2.2-a14b")
    lora = ["model.lora.rank=4", "model.lora.alpha=4", "run.max_steps=2", "optim.lr=1e-2"]
    for expert in ("transformer", "transformer_2"):
        train(wan_config(manifest, folder, tmp_path / expert, f"model.expert={expert}", *lora))
        assert {p.name for p in (tmp_path / expert / "export" / "lora").iterdir()} >= {DIFFUSERS_FILE, COMFYUI_FILE}
        assert not (tmp_path / expert / "export" / "transformer").exists()  # adapters only, no merged copy
    merged = tmp_path / "merged"
    shutil.copytree(folder, merged)
    for expert in ("transformer", "transformer_2"):
        model = Mask2DiTWanTransformer3DModel.from_pretrained(folder / expert)
        model.load_state_dict(merge_lora(model.state_dict(), read_lora(tmp_path / expert / "export" / "lora")))
        model.save_pretrained(merged / expert)
    prompts = tmp_path / "p.json"
    prompts.write_text('["a man walks into the room", "the man opens the door"]')
    size = ["--height", "32", "--width", "32", "--num-frames", "9", "--steps", "2", "--dtype", "fp32"]
    adapters = ["--lora", str(tmp_path / "transformer" / "export" / "lora" / COMFYUI_FILE),
                "--lora-2", str(tmp_path / "transformer_2" / "export" / "lora")]  # fmt: skip
    assert (
        generate(["--model", str(folder), "--prompts", str(prompts), "--out", str(tmp_path / "a"), *size, *adapters])
        == 0
    )
    assert generate(["--model", str(merged), "--prompts", str(prompts), "--out", str(tmp_path / "b"), *size]) == 0
    from safetensors.torch import load_file

    a, b = (load_file(tmp_path / run / "latents.safetensors")["latents"] for run in "ab")
    assert torch.allclose(a, b, atol=1e-5)
