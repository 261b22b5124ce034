"""Tests of `manifests/inspect.py`: summaries of a manifest directory: a text report and a browsable
HTML page of keyframes."""

from __future__ import annotations

import re

import pytest

from curation.run import main
from manifests import read_table
from manifests.__main__ import main as manifests_main
from manifests.inspect import html_report
from tests.conftest import CLIP_MINUTES
from tests.support.jobs import curate_one, run_job


def test_html_report_shows_keyframes(ray_local, tmp_path, multi_shot_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path) == 0
    page = html_report(out).read_text()
    # every shot shows its keyframe: as an image, or as the poster of its playable preview
    assert page.count("<img") + page.count("<video class=preview") == len(read_table(out, "shots"))
    assert "keyframes/" in page and page.count("poster='") == page.count("<video class=preview")
    # spans read as half-open and indices say which numbering they use
    first = read_table(out, "shots").sort_values("start_frame").iloc[0]
    assert "shot_index 0 · " in page and f"frames [0, {first['end_frame']})" in page


def test_inspect_refuses_what_is_not_a_manifest(tmp_path, capsys):
    assert manifests_main(["inspect", str(tmp_path / "typo")]) == 1
    assert manifests_main(["inspect", str(tmp_path / "typo"), "--html"]) == 1
    assert not (tmp_path / "typo").exists()  # --html did not create the mistyped folder
    (tmp_path / "file.txt").write_text("x")
    assert manifests_main(["inspect", str(tmp_path / "file.txt")]) == 1
    assert manifests_main(["inspect", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no such folder" in err and "is a file" in err and "holds no manifest tables" in err


@pytest.mark.slow
def test_the_page_says_which_video_shots_pairs_and_caption_status(ray_local, tmp_path, multi_shot_video):
    from manifests.inspect import html_report

    out = tmp_path / "out"
    assert curate_one(out, multi_shot_video) == 0
    page = html_report(out).read_text()
    assert multi_shot_video.path.name in page and "</b> shot_index " in page
    assert "1 &amp; 2: " in page and "2 &amp; 3: " in page  # every pair's score is labelled with its shots (1 to N)
    assert re.search(r"shot 1 of \d+ \(shot_index \d+\)", page) and "half-open, [first, end)" in page
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
def test_inspect_shows_units_annotation_status_and_a_page_with_playable_previews(ray_local, tmp_path, multi_shot_video,
                                                                                  capsys):  # fmt: skip
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


def test_the_report_always_has_a_combinations_line_saying_why_there_are_none(tmp_path):
    import json

    from manifests import write_part
    from manifests.inspect import text_report
    from tests.support.manifests import shot

    write_part(tmp_path, "shots", "v", [shot("v", 0), shot("v", 1)])
    assert "combinations: none (no run.json says why; run the curation job" in text_report(tmp_path)
    record = {"config": {"combine": {"within": "clip"}},
              "relevance": {"combinations": {"groups": 6, "groups_without_combinations": {
                  "fewer ok shots than --scenes": 5, "no combination passed the relevance filters": 1}}}}  # fmt: skip
    (tmp_path / "run.json").write_text(json.dumps(record))
    line = next(line for line in text_report(tmp_path).splitlines() if line.startswith("combinations:"))
    assert "6 groups mined (clips), none gave a combination: 5 groups: fewer ok shots than --scenes; 1 group: no " \
           "combination passed the relevance filters" in line  # fmt: skip
    assert "--within video" in line and "--clip-minutes" in line


def test_the_page_and_previews_never_write_outside_the_manifest(tmp_path):
    """A link planted at index.html is replaced, not written through; a hostile shot_id cannot place
    a preview outside keyframes/previews."""
    from manifests import write_part
    from manifests.inspect import html_report
    from manifests.io import file_name
    from tests.support.manifests import shot

    victim = tmp_path / "victim.html"
    victim.write_text("keep me")
    manifest = tmp_path / "m"
    hostile = shot("v", 0) | {"shot_id": "../../../outside/escaped", "source_path": str(tmp_path / "missing.mp4")}
    write_part(manifest, "shots", "v", [hostile])
    (manifest / "index.html").symlink_to(victim)
    page = html_report(manifest)
    assert victim.read_text() == "keep me" and not (manifest / "index.html").is_symlink()
    assert "Manifest" in page.read_text()
    assert not (tmp_path / "outside").exists()
    assert file_name("../../../outside/escaped").startswith("id-") and "/" not in file_name("../x")
    assert file_name("v_0000060") == "v_0000060"
