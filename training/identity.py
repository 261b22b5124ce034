"""What a run folder holds: the identity of the training it resumes, so another training never continues it.

RUN/run_identity.json records the stage, the manifest (its path and a fingerprint of the samples it
gives: shots, sources and captions), the model and starting weights, the backbone, and every config
field that changes what is trained (data, objective, optimizer, seed, precision). Settings that
leave the result unchanged (run.max_steps, save and log intervals, the attention backend, workers,
ZeRO stage, sequence parallelism) are not part of it, so a finished run can be extended.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from manifests.io import write_json_atomic
from manifests.store import location
from training.config import TrainConfig

IDENTITY = "run_identity.json"
NEUTRAL = {
    "data": {"num_workers", "max_skipped_fraction", "precomputed"},
    "model": {"attention_backend", "gradient_checkpointing", "create_tiny"},
}


class RunIdentityError(ValueError):
    """run.output holds a run of another training; the message names both and what to do."""


def fingerprint(samples) -> str:
    """Content of the samples a manifest gives: every scene's shot, source and caption."""
    digest = hashlib.blake2b(digest_size=12)
    for sample in samples:
        for scene in sample:
            digest.update(f"{scene.shot['shot_id']}|{scene.shot['source_path']}|{scene.caption}\n".encode())
    return digest.hexdigest()


def run_identity(config: TrainConfig, samples, family: str) -> dict:
    data = config.data.model_dump(mode="json", exclude=NEUTRAL["data"] | {"manifest"})
    model = config.model.model_dump(mode="json", exclude=NEUTRAL["model"] | {"path", "transformer"})
    return {
        "stage": config.data.stage,
        "manifest": str(location(config.data.manifest).resolve()),
        "manifest_fingerprint": fingerprint(samples),
        "model": str(Path(config.model.path).resolve()),
        "start_weights": str(Path(config.model.transformer).resolve()) if config.model.transformer else None,
        "family": family,
        "model_options": model,
        "data": data,
        "objective": config.objective.model_dump(mode="json"),
        "optim": config.optim.model_dump(mode="json"),
        "seed": config.run.seed,
        "precision": config.run.precision,
    }


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key}: {a!r} in the run, {b!r} now")
    return found


def check_identity(run: Path, identity: dict, has_checkpoints: bool, write: bool = True) -> None:
    """Refuse to resume a run folder that holds another training; record the identity of a new one."""
    path = run / IDENTITY
    if has_checkpoints and path.is_file():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError):
            stored = None
        if isinstance(stored, dict):
            changed = differences(stored, identity)
            if changed:
                raise RunIdentityError(
                    f"run.output {run} holds another training ({len(changed)} difference(s): "
                    + "; ".join(changed[:6])
                    + ("; ..." if len(changed) > 6 else "")
                    + f"). Give a new run.output for this training, or set run.resume=false to start over in {run} "
                    "(its checkpoints are replaced)"
                )
            return
    if has_checkpoints:  # checkpoints without a readable identity: nothing proves they are this training's
        raise RunIdentityError(
            f"run.output {run} has checkpoints but its run identity ({path.name}) is missing or unreadable, so "
            "nothing shows they come from this training (its settings, model and data). Restore the file, give a "
            f"new run.output, or set run.resume=false to start over in {run} (its checkpoints are replaced)"
        )
    if write:
        write_json_atomic(path, identity)
