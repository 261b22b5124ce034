"""Tests of `model/generate.py`: generate multi-scene videos with Mask²DiT, or extend an earlier
result scene by scene."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings

import av
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from manifests.sampling import max_stride_window
from model.cogvideox_pipeline import Mask2DiTPipeline
from model.generate import main
from model.tiny import build_tiny_model
from tests.support import REPO


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory):
    """A tiny model and a two-scene output of it, to expand from."""
    from model.generate import main

    root = tmp_path_factory.mktemp("expand")
    model = build_tiny_model(root / "model")
    prompts = root / "p.json"
    prompts.write_text('["a man walks", "a dog runs"]')
    size = ["--height", "32", "--width", "32", "--num-frames", "9", "--steps", "1", "--dtype", "fp32"]
    assert main(["--model", str(model), "--prompts", str(prompts), "--out", str(root / "story"), *size]) == 0
    return model, root / "story", size


def damage_nan(latents):
    latents[:] = float("nan")
    return latents


LATENT_DAMAGE = {
    "corrupt": (None, "latents.safetensors cannot be read"),
    "fewer frames": (lambda x: x[:, :4].contiguous(), "latents have shape (1, 4, 4, 8, 8)"),
    "other channels": (lambda x: x[:, :, :2].contiguous(), "latents have shape (1, 6, 2, 8, 8)"),
    "all NaN": (damage_nan, "NaN or infinite values"),
}


STEPS = ["--steps", "2", "--height", "32", "--width", "32", "--num-frames", "9", "--dtype", "fp32", "--fps", "8"]


def video_facts(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return frames, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


def test_context_video_frames_use_the_largest_stride_that_fits(tmp_path):
    from curation.samples import write_synthetic_video
    from model.generate import read_video

    video = write_synthetic_video(tmp_path / "ctx.mp4", [40], fps=24.0, size=(64, 48), seed=3).path
    frames = read_video(video, 9, 32, 32, seed=1)
    assert frames.shape == (9, 32, 32, 3)
    rng = np.random.default_rng(0)
    assert max_stride_window(40, 9, 3, rng)[1] == 3 and max_stride_window(20, 9, 3, rng)[1] == 2
    assert max_stride_window(8, 9, 3, rng) is None
    starts = {max_stride_window(40, 9, 3, np.random.default_rng(s))[0] for s in range(200)}
    assert starts == set(range(40 - 24))  # every start that fits, and only those


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--num-frames", "10"], "--num-frames 10: must be 4k+1"),
        (["--height", "100"], "--height 100: must be a positive multiple of 16"),
        (["--steps", "0"], "--steps 0: must be at least 1"),
        (["--expand-from", "nowhere.mp4"], "--expand-from nowhere.mp4: not found"),
    ],
)
def test_generate_checks_arguments_before_loading_anything(tmp_path, capsys, extra, message):
    from model.generate import main

    prompts = tmp_path / "p.json"
    prompts.write_text('["a man walks"]')
    # The model folder does not even exist: the arguments are refused before it would be read.
    assert main(["--model", str(tmp_path / "no-model"), "--prompts", str(prompts), "--out", str(tmp_path / "o"),
                 *extra]) == 2  # fmt: skip
    assert message in capsys.readouterr().err


def test_generate_refuses_a_file_as_output_folder(tmp_path, capsys):
    from model.generate import main

    prompts, target = tmp_path / "p.json", tmp_path / "story.mp4"
    prompts.write_text('["a man walks"]')
    target.write_bytes(b"")
    assert main(["--model", str(tmp_path), "--prompts", str(prompts), "--out", str(target)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_generate_help_is_fast_and_shows_defaults():
    code = ("import sys, contextlib, io\nfrom model.generate import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try: main(['--help'])\n    except SystemExit: pass\n"
            "assert 'diffusers' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)[:5]\n"
            "print(out.getvalue())")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "49 CogVideoX, 81 Wan" in done.stdout and "DDIM (unset)" in done.stdout  # each backbone's default


@pytest.mark.parametrize("case", list(LATENT_DAMAGE))
def test_bad_expansion_latents_are_refused_before_the_model_loads(earlier_output, tmp_path, capsys, monkeypatch, case):
    from safetensors.torch import load_file, save_file

    from model.generate import main

    model, story, size = earlier_output
    copy = tmp_path / "story"
    shutil.copytree(story, copy)
    change, message = LATENT_DAMAGE[case]
    if change is None:
        (copy / "latents.safetensors").write_bytes(b"\0" * 64)
    else:
        save_file({"latents": change(load_file(copy / "latents.safetensors")["latents"])}, copy / "latents.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the latents were checked")

    monkeypatch.setattr(Mask2DiTPipeline, "from_pretrained", classmethod(refuse))
    more = tmp_path / "more.json"
    more.write_text('["a cat sleeps"]')
    code = main(["--model", str(model), "--prompts", str(more), "--expand-from", str(copy), "--out",
                 str(tmp_path / "out"), *size])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()  # no black scene written


def test_generate_reports_load_and_generation_time_apart_without_deprecation_warnings(tmp_path, capsys):
    from model.generate import main

    model = build_tiny_model(tmp_path / "model")
    prompts = tmp_path / "p.json"
    prompts.write_text('["a man walks"]')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["--model", str(model), "--prompts", str(prompts), "--out", str(tmp_path / "o"), "--height", "32",
                     "--width", "32", "--num-frames", "9", "--steps", "1", "--dtype", "fp32"]) == 0  # fmt: skip
    ours = [
        w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning)) and "dtype" in str(w.message)
    ]
    assert not ours, [str(w.message) for w in ours]
    out = capsys.readouterr().out
    assert "loading" in out and "generating" in out
    settings = json.loads((tmp_path / "o" / "generation.json").read_text())["settings"]
    assert settings["load_seconds"] > 0 and settings["generation_seconds"] > 0
    assert abs(settings["load_seconds"] + settings["generation_seconds"] - settings["seconds"]) < 0.01


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
    assert record["scene_frames"] == [3, 3, 3] and record["scene_frames_unit"] == "latent frames"
    assert record["scene_video_frames"] == [9, 9, 9]
    for name in record["scene_files"]:
        assert video_facts(out / name) == (9, 32, 32, 8.0)
    assert video_facts(out / "video.mp4")[0] == 27
    latents_a = load_file(out / "latents.safetensors")["latents"]
    assert latents_a.shape == (1, 9, 4, 8, 8)
    assert torch.equal(latents_a, load_file(tmp_path / "b" / "latents.safetensors")["latents"])


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


def test_a_prompt_too_long_for_the_text_encoder_is_one_line_naming_its_scene(tiny_model_dir, tmp_path, capfd):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(["a man walks", " ".join(["the tall man walks into the dark room slowly"] * 40)]))
    assert main(["--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "o"), *STEPS]) == 0
    err = capfd.readouterr().err
    warnings = [line for line in err.splitlines() if "prompt is" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: scene 2's prompt is ")
    assert "the text encoder reads the first" in warnings[0]
    assert "<unk>" not in err and "was truncated" not in err


def test_a_text_file_given_as_a_context_video_is_one_line(tiny_model_dir, tmp_path, capsys):
    notes, prompts = tmp_path / "notes.txt", tmp_path / "prompts.json"
    notes.write_text("not a video\n")
    prompts.write_text(json.dumps(["a man walks"]))
    code = main(["--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(tmp_path / "o"), *STEPS,
                 "--expand-from", str(notes), "--context-prompts", str(prompts)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"error: --expand-from: {notes}: cannot open" in err and "give context videos" in err
