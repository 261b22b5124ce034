"""Tests of `curation/local_captioner.py`: captions from an open vision-language model in Ray actors,
on a tiny random Qwen2.5-VL folder built in-process and loaded through the real code."""

from __future__ import annotations

import json

import pytest

from curation.config import AnnotateConfig, CurationConfig
from curation.local_captioner import CaptionItem, first_messages, judge, media_key
from curation.run import main, run_stages
from manifests import read_table
from model.tiny import build_tiny_captioner
from tests.conftest import CLIP_MINUTES
from tests.support import captioner
from tests.support.captioner import forcing_stage, rule_breaking_reply, valid_reply


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    return build_tiny_captioner(tmp_path_factory.mktemp("tiny-qwen"), "qwen2_5_vl")


@pytest.fixture()
def by_value():
    """The forcing stages are defined in tests/support: Ray workers get them pickled by value."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(captioner)
    yield
    ray.cloudpickle.unregister_pickle_by_value(captioner)


def config(out, video, folder, **annotate) -> CurationConfig:
    return CurationConfig(inputs=[str(video.path)], output=out, shots={"clip_minutes": CLIP_MINUTES},
                          combine={"within": "video", "min_relevance": -10},
                          annotate={"captioner": "local", "local": {"model": folder, "max_new_tokens": 400},
                                    "caption_shots": True, **annotate})  # fmt: skip


def test_local_captions_are_ok_written_cached_and_never_made_twice(
    ray_local, tmp_path, multi_shot_video, tiny_qwen, by_value
):
    out = tmp_path / "out"
    report = run_stages([str(multi_shot_video.path)], config(out, multi_shot_video, tiny_qwen),
                        swap={"caption": forcing_stage(valid_reply)}).stage("annotate").report  # fmt: skip
    notes = read_table(out, "annotations")
    assert notes["status"].tolist() == ["ok"] and len(notes["captions"].iloc[0]) == 3
    assert notes["characters"].iloc[0][0]["name"] == "Actor1"
    assert notes["model"].iloc[0].startswith(f"{tiny_qwen.name}@") and notes["input_mode"].iloc[0] == "video"
    assert notes["requests"].iloc[0] == 1 and notes["output_tokens"].iloc[0] > 50 and notes["seconds"].iloc[0] > 0
    shots = read_table(out, "shot_captions")
    assert (shots["status"] == "ok").all() and len(shots) == 3
    total = report["total"]
    assert total["captioner"] == "local" and total["captioned"] == 4 and total["estimated_cost_usd"] is None
    assert total["captions_per_s"] > 0 and total["output_tokens_per_s"] > 0

    # Re-run: every reply comes from the cache; an actor would crash if it were asked anything.
    marker = tmp_path / "crash-if-asked"
    marker.write_text("")
    report = run_stages([str(multi_shot_video.path)], config(out, multi_shot_video, tiny_qwen),
                        swap={"caption": forcing_stage(valid_reply, str(marker))}).stage("annotate").report  # fmt: skip
    assert report["total"]["cache_hits"] == 4 and report["total"]["captioned"] == 0
    notes = read_table(out, "annotations")
    assert notes["status"].tolist() == ["ok"] and notes["from_cache"].tolist() == [True]
    assert notes["requests"].tolist() == [0]


def test_a_reply_that_breaks_the_rules_is_asked_again_then_invalid(
    ray_local, tmp_path, multi_shot_video, tiny_qwen, by_value
):
    out = tmp_path / "out"
    run_stages([str(multi_shot_video.path)], config(out, multi_shot_video, tiny_qwen, max_reasks=1,
                                                    caption_shots=False),
               swap={"caption": forcing_stage(rule_breaking_reply)})  # fmt: skip
    notes = read_table(out, "annotations")
    assert notes["status"].tolist() == ["invalid"] and notes["requests"].tolist() == [2]  # the ask and one re-ask
    assert "Actor2" in notes["error"].iloc[0] and "they" in notes["error"].iloc[0]


def test_a_crashed_caption_actor_is_a_failed_row_and_a_rerun_captions_it(
    ray_local, tmp_path, multi_shot_video, tiny_qwen, by_value
):
    out, marker = tmp_path / "out", tmp_path / "crash"
    marker.write_text("")
    settings = config(out, multi_shot_video, tiny_qwen, caption_shots=False)
    run_stages([str(multi_shot_video.path)], settings, swap={"caption": forcing_stage(valid_reply, str(marker))})
    notes = read_table(out, "annotations")
    assert notes["status"].tolist() == ["failed"] and notes["error_stage"].tolist() == ["caption"]
    assert "caption actor" in notes["error"].iloc[0] and "crashed" in notes["error"].iloc[0]
    marker.unlink()
    run_stages([str(multi_shot_video.path)], settings, swap={"caption": forcing_stage(valid_reply, str(marker))})
    assert read_table(out, "annotations")["status"].tolist() == ["ok"]


@pytest.mark.slow
def test_the_command_line_captions_with_a_model_folder_and_reports_tokens_per_second(
    ray_local, tmp_path, multi_shot_video, tiny_qwen, capfd, monkeypatch
):
    """As a user runs it: no key, a random tiny model (its replies run out of tokens: truncated)."""
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    out = tmp_path / "out"
    flags = ["--input", str(multi_shot_video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
             "--within", "video", "--min-relevance", "-10", "--captioner", "local", "--captioner-model",
             str(tiny_qwen), "--captioner-max-new-tokens", "24"]  # fmt: skip
    assert main(flags) == 0
    printed = capfd.readouterr().out
    assert "local captioner: 1 items" in printed and "output tokens/s" in printed and "GEMINI_API_KEY" not in printed
    notes = read_table(out, "annotations")
    assert notes["status"].tolist() == ["truncated"] and notes["output_tokens"].tolist() == [24]
    total = json.loads((out / "run.json").read_text())["relevance"]["annotation"]["total"]
    assert total["output_tokens_per_s"] > 0 and total["captioner"] == "local"
    assert main(flags) == 0  # resumed: nothing generated again
    assert read_table(out, "annotations")["from_cache"].tolist() == [True]


def test_local_without_a_model_folder_is_refused_at_the_door(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--output", str(tmp_path / "out"), "--captioner", "local"])
    assert "--captioner local needs --captioner-model" in capsys.readouterr().err


def test_the_first_ask_is_gemini_s_prompt_with_each_shot_as_a_video():
    import numpy as np

    item = CaptionItem("c1", [2.0, 3.5], [np.zeros((2, 8, 8, 3), np.uint8)] * 2)
    system, user = first_messages(item, {"type": "object"})
    assert "You are shown 2 shot(s)" in system["content"] and '{"type": "object"}' in system["content"]
    assert [p["type"] for p in user["content"]] == ["text", "video", "text", "video"]
    assert user["content"][2]["text"] == "Shot 2 of 2 (3.5 s):" and user["content"][3]["video"] == 1


def test_replies_are_judged_by_gemini_s_rules_and_truncation_is_its_own_status():
    settings = AnnotateConfig()
    assert judge(valid_reply(2), True, 2, settings)[0] == "ok"
    assert judge(valid_reply(2), False, 2, settings)[0] == "truncated"
    status, problems, _ = judge(rule_breaking_reply(1), True, 1, settings)
    assert status == "invalid" and any("Actor2" in p for p in problems)
    assert judge("{not json", True, 1, settings)[0] == "invalid"


def test_what_the_model_is_shown_is_part_of_the_cache_key(tmp_path):
    base = AnnotateConfig()
    keys = {media_key(base), media_key(base.model_copy(update={"video_fps": 2.0})),
            media_key(base.model_copy(update={"local": base.local.model_copy(update={"max_pixels": 9999})}))}  # fmt: skip
    assert len(keys) == 3
