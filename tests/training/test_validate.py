"""Tests of `training/validate.py`: validation during training: the configured prompts generated as
one multi-scene video, scored."""

from __future__ import annotations

import json

import torch


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
                                                             f"model.transformer={model_dir / 'transformer'}",
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


def test_validation_reads_the_text_length_of_the_weights_training_starts_from(tmp_path):
    """With model.transformer set (SFT from a pretrain export), validation encodes prompts to that
    transformer's text length, as training does, not to the base model's."""
    from model import Mask2DiTTransformer3DModel
    from model.families import family_of
    from model.tiny import build_tiny_model
    from training.config import load_config, transformer_weights
    from training.validate import Validator

    model_dir = build_tiny_model(tmp_path / "model")
    base = Mask2DiTTransformer3DModel.from_pretrained(model_dir / "transformer")
    export = tmp_path / "export"
    Mask2DiTTransformer3DModel.from_config({**base.config, "max_text_seq_length": 8}).save_pretrained(export)
    config = load_config("training/configs/tiny_sft.yaml", [f"model.path={model_dir}", f"model.transformer={export}",
                                                             f"run.output={tmp_path / 'run'}"])  # fmt: skip
    family = family_of(model_dir)
    assert base.config.max_text_seq_length != 8
    validator = Validator(config, family, base, None, torch.device("cpu"), torch.float32)
    assert validator.text_length == 8 == family.text_length(model_dir, transformer_weights(config))
