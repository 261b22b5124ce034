"""What a new user meets first: argument checks before work, portable outputs, honest inspection,
repair of a damaged manifest, and pages that answer questions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from manifests import read_table
from manifests.__main__ import main as manifests_main
from tests.conftest import CLIP_MINUTES

REPO = Path(__file__).resolve().parent.parent


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


def test_inspect_refuses_what_is_not_a_manifest(tmp_path, capsys):
    assert manifests_main(["inspect", str(tmp_path / "typo")]) == 1
    assert manifests_main(["inspect", str(tmp_path / "typo"), "--html"]) == 1
    assert not (tmp_path / "typo").exists()  # --html did not create the mistyped folder
    (tmp_path / "file.txt").write_text("x")
    assert manifests_main(["inspect", str(tmp_path / "file.txt")]) == 1
    assert manifests_main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no such folder" in err and "is a file" in err and "holds no manifest tables" in err


def test_output_that_is_a_file_names_the_flag(tmp_path, capsys):
    from curation.run import main

    target = tmp_path / "out"
    target.write_text("x")
    with pytest.raises(SystemExit):
        main(["--output", str(target)])
    err = capsys.readouterr().err
    assert f"--output {target} exists and is not a directory" in err and "--:" not in err


def run_job(out, video, *extra):
    from curation.run import main

    return main(["--input", str(video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
                 "--within", "video", "--min-relevance", "-10", *extra])  # fmt: skip


@pytest.mark.slow
def test_a_deleted_table_is_reported_then_repaired_by_a_rerun(ray_local, tmp_path, multi_shot_video, capsys):
    from manifests.inspect import text_report

    out = tmp_path / "out"
    assert run_job(out, multi_shot_video) == 0
    combos = read_table(out, "combinations")
    assert len(combos)
    mode = (out / "run.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # shareable like every other file, not 0600
    shutil.rmtree(out / "shots.parquet")
    assert "shots.parquet is missing" in text_report(out)
    assert read_table(out, "combinations")["combination_id"].tolist() == combos["combination_id"].tolist()
    assert run_job(out, multi_shot_video) == 0  # the video is redone, not "already done"
    assert len(read_table(out, "shots")) == len(multi_shot_video.cuts) + 1
    assert read_table(out, "combinations")["combination_id"].tolist() == combos["combination_id"].tolist()
    assert "inconsistencies" not in text_report(out)
    seconds = json.loads((out / "run.json").read_text())["seconds"]
    assert {"total", "shots", "probe_tasks", "detect_tasks", "embed", "combine", "annotate"} <= seconds.keys()
    assert seconds["total"] >= seconds["shots"] + seconds["combine"]  # embedding streams inside "shots"


@pytest.mark.slow
def test_the_page_says_which_video_shots_pairs_and_caption_status(ray_local, tmp_path, multi_shot_video):
    from manifests.inspect import html_report

    out = tmp_path / "out"
    assert run_job(out, multi_shot_video) == 0
    page = html_report(out).read_text()
    assert multi_shot_video.path.name in page and "shots #" in page
    assert "1–2: " in page and "2–3: " in page  # every pair's score is labelled with its shots
    assert re.search(r"captions <span class=badge[^>]*>unannotated</span>", page)  # a compact status badge
    assert "title='nan'" not in page


def test_the_chart_draws_negative_scores_below_zero_with_means():
    import re

    from training.evaluate import bar_chart

    result = {"summary": {"visual_consistency_clip": 70.0, "semantic_consistency": -10.0},
              "per_video": [{"video": "a", "visual_consistency_clip": 70.0, "semantic_consistency": -10.0}]}  # fmt: skip
    svg = bar_chart(result)
    assert "Consistency per video" in svg and "cosine similarity x 100" in svg and "(mean -10.0)" in svg
    zero = float(re.search(r'<line x1="40" x2="\d+" y1="([\d.]+)" y2="[\d.]+" stroke="#888"/><text x="8" y="[\d.]+">0<',
                           svg).group(1))  # fmt: skip
    bars = [
        (float(y), float(h)) for y, h in re.findall(r'<rect x="\d+" y="([\d.]+)" width="23" height="([\d.]+)"', svg)
    ]
    (clip_y, clip_h), (semantic_y, semantic_h) = bars
    assert clip_y + clip_h == pytest.approx(zero) and semantic_y == pytest.approx(zero) and semantic_h > 0


@pytest.mark.slow
def test_every_table_exists_with_its_schema_when_nothing_qualifies(ray_local, tmp_path, multi_shot_video, capsys):
    import pandas as pd

    from manifests.schema import TABLES

    out = tmp_path / "out"
    assert run_job(out, multi_shot_video, "--min-relevance", "100") == 0  # no pair is that relevant
    for name, schema in TABLES.items():
        table = pd.read_parquet(out / f"{name}.parquet")  # plain pandas, as a user reads them
        assert list(table.columns) == schema.names, name
    assert len(pd.read_parquet(out / "combinations.parquet")) == 0


def test_renamed_flags_are_named_in_errors(tmp_path, capsys):
    from curation.run import main

    with pytest.raises(SystemExit):
        main(["--samples", "0", "--output", str(tmp_path)])
    assert "--samples: " in capsys.readouterr().err


def test_every_knob_is_a_flag_that_reaches_its_stage(tmp_path):
    from curation.run import parse_args

    config = parse_args(["--output", str(tmp_path), "--neighbors", "5", "--gemini-temperature", "0.7",
                         "--gemini-frames-per-shot", "6", "--embed-frames-per-shot", "12", "--gemini-max-reasks", "1"])  # fmt: skip
    assert config.combine.neighbors == 5
    assert config.annotate.temperature == 0.7 and config.annotate.max_reasks == 1  # what the annotator reads
    assert config.annotate.frames_per_shot == 6
    assert config.embed.frames_per_shot == 12
    dumped = config.model_dump(mode="json")  # what run.json records
    assert dumped["combine"]["neighbors"] == 5 and dumped["annotate"]["temperature"] == 0.7
    assert dumped["annotate"]["frames_per_shot"] == 6 and dumped["embed"]["frames_per_shot"] == 12


def test_flags_are_derived_from_the_config_fields_one_to_one(tmp_path):
    """Every config field has exactly one flag, every flag reaches its field, and the defaults live
    only in the fields (a flag not given leaves the field's default)."""
    from curation.config import CurationConfig, flags
    from curation.run import parse_args

    known = flags()
    assert len(set(known.values())) == len(known)  # one flag per field, none shared
    assert known["combine.min_relevance"] == "--min-relevance" and known["annotate.rpm"] == "--gemini-rpm"
    assert known["shots.detector.kind"] == "--detector" and known["sample_videos"] == "--samples"
    assert parse_args(["--output", str(tmp_path)]) == CurationConfig(output=tmp_path)
    config = parse_args(["--output", str(tmp_path), "--min-relevance", "0.8", "--no-retry-failed", "--detector",
                         "content", "--gemini-price", "0.3,2.5", "--embed-frames-from", "source"])  # fmt: skip
    assert config.combine.min_relevance == 0.8 and config.retry_failed is False
    assert config.shots.detector.kind == "content" and config.annotate.price == (0.3, 2.5)
    assert config.embed.frames_from == "source"


def test_a_yaml_config_file_with_flags_over_it(tmp_path, capsys):
    from curation.run import main, parse_args

    path = tmp_path / "curation.yaml"
    path.write_text("combine:\n  scenes: 2\n  min_relevance: 1.0\nshots:\n  detector:\n    kind: content\n")
    config = parse_args(["--config", str(path), "--output", str(tmp_path / "out"), "--min-relevance", "0.2"])
    assert config.combine.scenes == 2 and config.combine.min_relevance == 0.2  # the flag wins
    assert config.shots.detector.kind == "content"
    path.write_text("combine:\n  scenes: 1\n")
    with pytest.raises(SystemExit):
        main(["--config", str(path), "--output", str(tmp_path / "out")])
    assert "--scenes: " in capsys.readouterr().err


def test_the_readme_config_example_is_a_valid_config(tmp_path):
    """The YAML in the curation manual's configuration section parses into the config the job would run with."""
    import re

    import yaml

    from curation.config import CurationConfig

    manual = (Path(__file__).resolve().parent.parent / "docs" / "curation.md").read_text()
    block = re.search(r"## Configuration\n.*?```yaml\n(.*?)```", manual, re.S).group(1)
    tree = yaml.safe_load(block)
    weights = tmp_path / "viclip.pth"
    weights.write_bytes(b"")  # the example's checkpoint path, made to exist
    tree["embed"]["viclip_checkpoint"] = str(weights)
    config = CurationConfig.model_validate(tree | {"output": str(tmp_path / "out")})
    assert config.shots.detector.kind == "content" and config.embed.kind == "viclip"
    assert config.combine.scenes == 2 and config.annotate.rpm == 30
