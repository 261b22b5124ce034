"""The tiny training config and a config built from it for a manifest, a model and an output."""

from __future__ import annotations

from pathlib import Path

from training.config import load_config

CONFIG = Path(__file__).resolve().parents[2] / "training" / "configs" / "tiny.yaml"


def config_for(manifest, tiny_model, output, *overrides):
    return load_config(CONFIG, [f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={output}",
                                "data.allow_uncaptioned=false", "data.caption_dropout=0", *overrides])  # fmt: skip
