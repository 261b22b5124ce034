"""DeepSpeed checkpoints that resume exactly, keep-last-k, and an export that inference loads directly.

A checkpoint holds the model, optimizer, LR schedule (DeepSpeed's own state) plus, as client
state, the step, the number of samples consumed (the data position) and the RNG states. The
export is a CogVideoX-layout folder: our transformer saved with `save_pretrained`, the other
components linked from the base model folder, so `python -m model.generate --model RUN/export`
works as it is.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

TAG = re.compile(r"^step_(\d+)$")


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_tags(folder: Path) -> list[str]:
    tags = [p.name for p in folder.glob("step_*") if p.is_dir() and TAG.match(p.name)]
    return sorted(tags, key=lambda t: int(TAG.match(t).group(1)))


def save(engine, folder: Path, step: int, consumed: int, keep_last: int, is_main: bool) -> None:
    tag = f"step_{step}"
    engine.save_checkpoint(str(folder), tag=tag, client_state={"step": step, "consumed": consumed, "rng": rng_state()})
    if is_main:
        for old in checkpoint_tags(folder)[:-keep_last]:
            shutil.rmtree(folder / old, ignore_errors=True)


def resume(engine, folder: Path) -> tuple[int, int]:
    """Load the latest checkpoint if there is one; returns (step, samples consumed)."""
    tags = checkpoint_tags(folder) if folder.is_dir() else []
    if not tags:
        return 0, 0
    _, client = engine.load_checkpoint(str(folder), tag=tags[-1])
    restore_rng(client["rng"])
    return int(client["step"]), int(client["consumed"])


def export(engine, base_model: Path, target: Path, zero_stage: int, is_main: bool) -> None:
    """Write target/transformer (diffusers layout) and link the base model's other components."""
    module = engine.module
    if zero_stage == 3:  # parameters are partitioned: gather them to save a full copy
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if is_main:
                _write(module, base_model, target)
    elif is_main:
        _write(module, base_model, target)


def _write(module, base_model: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    staging = target / ".transformer-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    module.save_pretrained(staging)
    shutil.rmtree(target / "transformer", ignore_errors=True)
    staging.rename(target / "transformer")
    for name in ("model_index.json", "tokenizer", "text_encoder", "vae", "scheduler"):
        link = target / name
        if not link.exists() and (base_model / name).exists():
            link.symlink_to((base_model / name).resolve())
