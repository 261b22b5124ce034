"""Inference: fixed-scene generation and scene expansion through a tiny model folder, and the CLI."""

from __future__ import annotations

import json
import shutil

import av
import pytest
import torch
from safetensors.torch import load_file

from model.generate import main
from model.pipeline import Mask2DiTPipeline, ModelFolderError
from model.prompts import PromptFileError, load_prompts
from model.tiny import TINY_SIZE, build_tiny_model

STEPS = ["--steps", "2", "--height", "32", "--width", "32", "--num-frames", "9", "--dtype", "fp32", "--fps", "8"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def pipe(tiny_model_dir):
    pipe = Mask2DiTPipeline.from_pretrained(tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def video_facts(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def test_fixed_scene_cli_writes_scenes_and_is_reproducible(tiny_model_dir, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["a man walks into the room", "the man opens the door", "a dog runs"]))
    for run in ("a", "b"):
        assert (
            main(["--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(tmp_path / run), *STEPS]) == 0
        )
    out = tmp_path / "a"
    record = json.loads((out / "generation.json").read_text())
    assert record["scene_files"] == ["scene_00.mp4", "scene_01.mp4", "scene_02.mp4"]
    assert record["seeds"] == [42, 43, 44] and len(record["prompts"]) == 3
    for name in record["scene_files"]:
        assert video_facts(out / name) == (9, 32, 32, 8.0)
    assert video_facts(out / "video.mp4")[0] == 27
    latents_a = load_file(out / "latents.safetensors")["latents"]
    assert latents_a.shape == (1, 9, 4, 8, 8)
    assert torch.equal(latents_a, load_file(tmp_path / "b" / "latents.safetensors")["latents"])


def test_expansion_keeps_context_and_composes(pipe):
    base = pipe(["a man walks", "a woman sits"], num_inference_steps=2, seed=7, output_type="latent", **TINY_SIZE)
    kwargs = dict(num_inference_steps=2, seed=7, output_type="latent", **TINY_SIZE)
    once = pipe.expand(base, ["a dog runs", "a cat sits"], **kwargs)
    twice = pipe.expand(pipe.expand(base, ["a dog runs"], **kwargs), ["a cat sits"], **kwargs)
    assert once.scene_frames == [3, 3, 3, 3] and once.seeds == [7, 8, 9, 10]
    assert torch.equal(once.latents[:, :6], base.latents)  # context untouched
    assert torch.equal(once.latents, twice.latents)
    assert not torch.equal(once.latents[:, 6:9], once.latents[:, 9:])
    # A different prompt for the new scene changes only the new scene.
    other = pipe.expand(base, ["a red car at night"], **kwargs)
    assert torch.equal(other.latents[:, :6], base.latents) and not torch.equal(other.latents, once.latents[:, :9])


def test_cli_expands_an_earlier_output_and_video_files(tiny_model_dir, tmp_path):
    first = tmp_path / "first"
    (tmp_path / "p.json").write_text(json.dumps(["a man walks", "a woman sits"]))
    (tmp_path / "more.json").write_text(json.dumps(["a dog runs"]))
    assert (
        main(["--model", str(tiny_model_dir), "--prompts", str(tmp_path / "p.json"), "--out", str(first), *STEPS]) == 0
    )
    second = tmp_path / "second"
    assert main(["--model", str(tiny_model_dir), "--expand-from", str(first), "--prompts", str(tmp_path / "more.json"),
                 "--out", str(second), *STEPS]) == 0  # fmt: skip
    record = json.loads((second / "generation.json").read_text())
    assert record["prompts"] == ["a man walks", "a woman sits", "a dog runs"] and len(record["scene_files"]) == 3
    before = load_file(first / "latents.safetensors")["latents"]
    after = load_file(second / "latents.safetensors")["latents"]
    assert torch.equal(after[:, :6], before)
    # Context given as video files is encoded once with the VAE.
    third = tmp_path / "third"
    (tmp_path / "ctx.json").write_text(json.dumps(["a man walks", "a woman sits"]))
    assert main(["--model", str(tiny_model_dir), "--expand-from", str(first / "scene_00.mp4"), str(first / "scene_01.mp4"),
                 "--context-prompts", str(tmp_path / "ctx.json"), "--prompts", str(tmp_path / "more.json"),
                 "--out", str(third), *STEPS]) == 0  # fmt: skip
    assert json.loads((third / "generation.json").read_text())["scene_frames"] == [3, 3, 3]


def test_both_prompt_formats_parse(tmp_path):
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps(["one", " two "]))
    assert load_prompts(listing) == ["one", "two"]
    scenes = tmp_path / "scenes.json"
    scenes.write_text(json.dumps({
        "background": "A rainy street at night.",
        "characters": [{"name": "Actor1", "description": "a tall man in a grey coat"},
                       {"name": "Actor2", "description": "a woman with a red umbrella"}],
        "scenes": ["Actor1 waits under a lamp.", "Actor2 walks up to Actor1.", {"description": "Actor1 (a tall man in a grey coat) smiles."}],
    }))  # fmt: skip
    prompts = load_prompts(scenes)
    assert prompts[0] == "Actor1 (a tall man in a grey coat) waits under a lamp. A rainy street at night."
    assert prompts[1].startswith("Actor2 (a woman with a red umbrella) walks up to Actor1 (a tall man in a grey coat).")
    assert prompts[2].count("(a tall man in a grey coat)") == 1


@pytest.mark.parametrize(
    "content,message",
    [
        ("not json", "not valid JSON"),
        ("[]", "one non-empty string per scene"),
        ('{"characters": []}', "'scenes' must be a non-empty list"),
        ('{"scenes": ["Actor3 runs"], "characters": [{"name": "Actor1", "description": "x"}]}', "Actor3"),
        ('{"scenes": ["x"], "characters": "Actor1"}', "'characters' must be a list"),
        ("42", "expected a JSON list"),
    ],
)
def test_malformed_prompt_files_fail_with_a_message(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PromptFileError, match=message):
        load_prompts(path)


def test_incomplete_model_folder_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelFolderError, match="missing vae"):
        Mask2DiTPipeline.from_pretrained(broken)
    (tmp_path / "p.json").write_text('["a"]')
    assert main(["--model", str(broken), "--prompts", str(tmp_path / "p.json"), "--out", str(tmp_path / "o")]) == 2
    assert "missing vae" in capsys.readouterr().err
