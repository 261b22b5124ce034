"""Traps a new user fell into, from a fresh clone and the README: each test failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from manifests import read_table, write_part
from tests.conftest import CLIP_MINUTES
from tests.test_training import CONFIG, config_for, manifest, tiny_model  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent


def train_cli(*args) -> int:
    from training.train import main

    return main(["--config", str(CONFIG), "data.allow_uncaptioned=false", "data.caption_dropout=0", *args])


# --- 1. a run knows what it is -------------------------------------------------------------------


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


# --- 2. cluster paths ----------------------------------------------------------------------------


def test_relative_paths_under_a_ray_job_are_refused_with_the_absolute_path_to_give(tmp_path, monkeypatch, capsys):
    from curation.run import main

    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what `ray job submit` sets for its entrypoint
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as refused:
        main(["--input", "films", "--output", "out"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert "--output out is relative" in err and "--input films is relative" in err and "absolute path" in err
    assert not (tmp_path / "out").exists()


# --- 3. fast, helpful CLIs ------------------------------------------------------------------------


def test_train_help_answers_fast_without_torch_and_lists_every_key():
    code = ("import sys, contextlib, io, time\nbegan = time.perf_counter()\nsys.argv = ['train.py', '--help']\n"
            "sys.path.insert(0, '.')\nfrom training.train import main\nout = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n    try: main(['--help'])\n    except SystemExit: pass\n"
            "assert 'torch' not in sys.modules and 'deepspeed' not in sys.modules\n"
            "print(time.perf_counter() - began)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.strip().splitlines()[-1]) < 2.0
    listing = subprocess.run([sys.executable, "training/train.py", "--help-config"], cwd=REPO, capture_output=True,
                             text=True, timeout=60).stdout  # fmt: skip
    from training.config import config_keys

    keys = config_keys()
    assert len(keys) > 50 and all(text for _, _, text in keys)  # every key has its help
    for key, default, _ in keys:
        assert key in listing and default in listing


@pytest.mark.parametrize(
    "args,expected",
    [
        (["data.scnes=2"], "data.scnes: unknown key (did you mean data.scenes?)"),
        (["modle.path=x"], "modle: unknown section (did you mean model?)"),
        (
            ["--max-steps", "5"],
            "unknown flag --max-steps: config keys go as section.key=value (did you mean run.max_steps=5?)",
        ),
    ],
)
def test_training_mistakes_get_a_did_you_mean_as_the_last_line(args, expected):
    begun = time.perf_counter()
    done = subprocess.run([sys.executable, "training/train.py", "--config", str(CONFIG), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and expected in lines[-1] and len(lines) <= 2, done.stderr
    assert time.perf_counter() - begun < 10  # found before torch or DeepSpeed load


@pytest.mark.parametrize(
    "args,expected",
    [
        (["--outptu", "x"], "unknown flag --outptu (did you mean --output?)"),
        (["--output", "README.md/sub"], "--output README.md/sub: README.md is a file, not a folder"),
        (
            ["--output", "{tmp}/o", "--config", "{tmp}/bad.yaml"],
            "shots.detectr (in --config): unknown key (did you mean shots.detector?)",
        ),
    ],
)
def test_curation_mistakes_are_one_usage_line_and_the_error_last(tmp_path, args, expected):
    (tmp_path / "bad.yaml").write_text("shots:\n  detectr: content\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    done = subprocess.run([sys.executable, "curation/run.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 2 and lines[0].startswith("usage:"), done.stderr
    assert expected in lines[-1] and "Traceback" not in done.stderr


def test_import_names_its_own_arguments_and_what_url_means(tmp_path, capsys):
    from manifests.__main__ import main

    source = tmp_path / "sft.json"
    source.write_text(json.dumps([{"prefix": "s", "values": [{"url": "gone.mp4", "caption": "c"}] * 3}]))
    assert main(["import", str(source), "--output", str(tmp_path / "m")]) == 1
    printed = capsys.readouterr().out
    assert "--input" not in printed and "file not found" in printed
    manual = (REPO / "docs" / "training.md").read_text()
    assert "`url` in `sft.json`: the clip file's path" in manual


# --- 4. say what happened --------------------------------------------------------------------------


def test_generate_reports_load_and_generation_time_apart_without_deprecation_warnings(tmp_path, capsys):
    from model.generate import main
    from model.tiny import build_tiny_model

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


@pytest.mark.slow
def test_inspect_shows_units_annotation_status_and_a_page_with_playable_previews(ray_local, tmp_path, multi_shot_video,
                                                                                  capsys):  # fmt: skip
    from curation.run import main
    from manifests.__main__ import main as manifests_main

    out = tmp_path / "out"
    assert main(["--input", str(multi_shot_video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
                 "--within", "video", "--min-relevance", "-10"]) == 0  # fmt: skip
    capsys.readouterr()
    assert manifests_main(["inspect", str(out), "--html"]) == 0
    report = capsys.readouterr().out
    assert "(z-score:" in report and "captions of the ok combinations: 1 unannotated" in report
    assert "set GEMINI_API_KEY" in report
    page = (out / "index.html").read_text()
    assert page.count("<video class=preview") >= len(multi_shot_video.cuts) + 1  # every ok shot can be played
    import re

    visible = re.sub(r"title='[^']*'", "", page)  # a badge's detail is its tooltip
    assert visible.count("set GEMINI_API_KEY") == 1  # the hint once, not on every row
    assert "class=badge" in page
    previews = list((out / "keyframes" / "previews").glob("*.mp4"))
    assert previews and all(p.stat().st_size > 0 for p in previews)


@pytest.mark.slow
def test_a_local_run_prints_one_calm_line_about_rays_token(tmp_path, multi_shot_video):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    done = subprocess.run([sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output",
                           str(tmp_path / "o"), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Token authentication is enabled" not in done.stdout + done.stderr
    assert "local Ray started for this job" in done.stdout
