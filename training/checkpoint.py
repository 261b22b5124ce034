"""DeepSpeed checkpoints that resume exactly, survive a kill mid-save, and never run code on load.

A checkpoint `step_N/` holds DeepSpeed's model, optimizer and LR-schedule files, plus our own state
as JSON: `trainer_state.json` (step, samples consumed = the data position) and one
`rng_rank{R}.json` per rank. Rank 0 writes `complete.json` last, listing every file with its size:
it is the commit marker. Resume takes the newest checkpoint whose marker is present and whose files
are all there at their recorded sizes, and falls back to an older one when a newer one cannot be
loaded; a folder without a marker (a save that was killed) is ignored and later cleaned up.

DeepSpeed's own loader unpickles with `weights_only=False`, which runs whatever a planted file
says. Here every DeepSpeed file is loaded with `torch.load(weights_only=True)` and an explicit
allow-list of the few DeepSpeed types its checkpoints hold; anything else is refused with an error
naming the file. Nothing of ours is pickled at all.

The export is a self-contained CogVideoX-layout folder: our transformer saved with `save_pretrained`
and the base model's other components (hard-linked or copied; `run.export_components=symlink` to
link instead), so `python -m model.generate --model RUN/export` works wherever the folder goes.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from manifests.io import write_atomic
from model.weights import CheckpointError  # one type for every checkpoint that cannot be loaded

log = logging.getLogger("training")

TAG = re.compile(r"^step_(\d+)$")
MARKER = "complete.json"
STATE = "trainer_state.json"


class RefusedCheckpoint(CheckpointError):
    """A file that holds objects outside the allow-list: loading it could run code. Never routed
    around silently (resume stops), unlike a damaged checkpoint."""


def _read_json(path: Path, check, shape: str):
    """A JSON file of ours, parsed and checked for the shape we wrote; CheckpointError otherwise."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot be read as JSON ({err})") from err
    try:
        ok = check(value)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: not {shape} (found {json.dumps(value)[:80]}); the file is damaged")
    return value


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _marker_ok(value) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("files"), dict)
        and all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in value["files"].items())
    )


def _state_ok(value) -> bool:
    return isinstance(value, dict) and _is_int(value.get("step")) and _is_int(value.get("consumed")) \
        and value["step"] >= 0 and value["consumed"] >= 0  # fmt: skip


def _rng_ok(value) -> bool:
    python, numpy_state, torch_state = value["python"], value["numpy"], value["torch"]
    return (
        len(python) == 3 and len(python[1]) == 625 and all(_is_int(x) for x in python[1])
        and len(numpy_state) == 5 and len(numpy_state[1]) == 624 and all(_is_int(x) for x in numpy_state[1])
        and len(torch_state) == len(torch.get_rng_state()) and all(_is_int(x) and 0 <= x < 256 for x in torch_state)
    )  # fmt: skip


def _write_json(path: Path, payload: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload)))


# --- RNG state as JSON --------------------------------------------------------------------------


def rng_state() -> dict:
    """Every generator the run draws from, as plain JSON values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng(state: dict) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


# --- loading DeepSpeed files without running code -------------------------------------------------


def deepspeed_safe_types() -> list:
    """The non-tensor types DeepSpeed's ZeRO checkpoints hold (found by inspecting real ones)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


def safe_load(path, map_location=None):
    """torch.load with weights_only=True and the DeepSpeed allow-list; refuses anything else."""
    try:
        with torch.serialization.safe_globals(deepspeed_safe_types()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # what the weights-only unpickler raises for a disallowed global
        raise RefusedCheckpoint(
            f"{path}: refused to load: it holds objects outside the allow-list of types a DeepSpeed "
            f"checkpoint needs ({str(err).splitlines()[0]}). Loading it could run code. If you did not "
            "write this file, delete it; if a DeepSpeed upgrade added a type, add it to "
            "training/checkpoint.py:deepspeed_safe_types"
        ) from err
    except Exception as err:  # truncated or damaged: the caller may fall back to an older checkpoint
        raise CheckpointError(f"{path}: cannot read ({type(err).__name__}: {err}); the file is damaged") from err


@contextmanager
def _weights_only(engine):
    """Route every file DeepSpeed loads through `safe_load` for the duration of a resume."""
    checkpoint_engine = engine.checkpoint_engine
    original = checkpoint_engine.load
    checkpoint_engine.load = lambda path, map_location=None: safe_load(path, map_location)
    try:
        yield
    finally:
        checkpoint_engine.load = original


# --- save, find, resume ------------------------------------------------------------------------


def checkpoint_tags(folder: Path, complete_only: bool = True) -> list[str]:
    """step_N folders, oldest first; by default only committed ones."""
    if not folder.is_dir():
        return []
    tags = [p.name for p in folder.iterdir() if p.is_dir() and TAG.match(p.name)]
    if complete_only:
        tags = [t for t in tags if (folder / t / MARKER).is_file()]
    return sorted(tags, key=lambda t: int(TAG.match(t).group(1)))


def save(engine, folder: Path, step: int, consumed: int, keep_last: int, is_main: bool, rank: int,
         adapters_only: bool = False) -> None:  # fmt: skip
    """A checkpoint of every trainable weight, the optimizer, schedule and RNG; `adapters_only`
    (LoRA): the frozen base is left out (megabytes instead of gigabytes: it is the base model)."""
    tag = f"step_{step}"
    target = folder / tag
    if is_main and (target / MARKER).exists():
        (target / MARKER).unlink()  # re-saving a step: it is incomplete until the new marker
    engine.save_checkpoint(str(folder), tag=tag, save_latest=False, exclude_frozen_parameters=adapters_only)
    _write_json(target / f"rng_rank{rank}.json", rng_state())
    torch.distributed.barrier()  # every rank's files are on disk before the marker says so
    if is_main:
        _write_json(target / STATE, {"step": step, "consumed": consumed})
        files = {p.name: p.stat().st_size for p in sorted(target.iterdir()) if p.is_file() and p.name != MARKER}
        _write_json(target / MARKER, {"step": step, "files": files})
        complete = checkpoint_tags(folder)
        for old in complete[:-keep_last]:
            shutil.rmtree(folder / old, ignore_errors=True)
        for stale in set(checkpoint_tags(folder, complete_only=False)) - set(complete):
            if int(TAG.match(stale).group(1)) < step:  # a save that was killed, older than this one
                shutil.rmtree(folder / stale, ignore_errors=True)
    torch.distributed.barrier()


def _verify(folder: Path, rank: int) -> tuple[dict, dict | None]:
    """(trainer state, this rank's RNG state or None) of an intact checkpoint; every file we wrote is
    checked for its recorded size and JSON shape before DeepSpeed opens anything."""
    marker = _read_json(folder / MARKER, _marker_ok, "a commit marker ({'step', 'files': {name: size}})")
    for name, size in marker["files"].items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing (the checkpoint lists it)")
        if path.stat().st_size != size:
            raise CheckpointError(f"{path}: {path.stat().st_size} bytes, the checkpoint recorded {size}: truncated")
    state = _read_json(folder / STATE, _state_ok, "a trainer state ({'step': int, 'consumed': int})")
    rng_file = folder / f"rng_rank{rank}.json"
    rng = _read_json(rng_file, _rng_ok, "an RNG state (python, numpy, torch)") if rng_file.is_file() else None
    return state, rng


def resume(engine, folder: Path, rank: int = 0, adapters_only: bool = False) -> tuple[int, int]:
    """Load the newest intact checkpoint; returns (step, samples consumed), or (0, 0) if none.
    `adapters_only`: the checkpoint holds the trainable weights only (LoRA), the rest is the base."""
    tags = checkpoint_tags(folder)
    ignored = sorted(set(checkpoint_tags(folder, complete_only=False)) - set(tags))
    if ignored and rank == 0:
        print(f"ignoring incomplete checkpoint(s) {', '.join(ignored)} in {folder} (a save was interrupted)",
              flush=True)  # fmt: skip
    problems = []
    for tag in reversed(tags):
        try:
            state, rng = _verify(folder / tag, rank)
            with _weights_only(engine):
                path, _ = engine.load_checkpoint(str(folder), tag=tag, load_module_strict=not adapters_only)
            if path is None:
                raise CheckpointError(f"{folder / tag}: DeepSpeed found nothing to load")
            if rng is not None:
                restore_rng(rng)
            if problems and rank == 0:
                print(f"resumed from {tag}; newer checkpoints could not be loaded: {'; '.join(problems)}", flush=True)
            return int(state["step"]), int(state["consumed"])
        except RefusedCheckpoint:
            raise  # a planted file is an alarm, not something to route around silently
        except CheckpointError as err:
            problems.append(str(err))
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            problems.append(f"{folder / tag}: cannot be loaded ({type(err).__name__}: {str(err).splitlines()[0]})")
    if problems:
        raise CheckpointError(
            "no checkpoint in "
            + str(folder)
            + " could be loaded: "
            + "; ".join(problems)
            + ". Move the damaged step_* folders away to start over, or set run.resume=false"
        )
    return 0, 0


class Checkpointer:
    """Owns a run's checkpoint folder: save (keep-last-k, commit marker), resume, export."""

    def __init__(self, folder: Path, keep_last: int, rank: int, export_components: str = "copy",
                 adapters_only: bool = False):  # fmt: skip
        self.folder, self.keep_last, self.rank = folder, keep_last, rank
        self.is_main, self.export_components, self.adapters_only = rank == 0, export_components, adapters_only

    def save(self, engine, step: int, consumed: int) -> None:
        save(engine, self.folder, step, consumed, self.keep_last, self.is_main, self.rank, self.adapters_only)

    def resume(self, engine) -> tuple[int, int]:
        """(step, samples consumed) of the newest intact checkpoint, or (0, 0)."""
        return resume(engine, self.folder, self.rank, self.adapters_only)

    def export(self, engine, base_model: Path, target: Path, zero_stage: int, subfolder: str = "transformer",
               components: tuple[str, ...] = ("model_index.json", "tokenizer", "text_encoder", "vae", "scheduler"),
               merge_lora=None) -> None:  # fmt: skip
        export(engine, base_model, target, zero_stage, self.is_main, self.export_components, subfolder, components,
               merge_lora)  # fmt: skip


# --- export --------------------------------------------------------------------------------------


def export(engine, base_model: Path, target: Path, zero_stage: int, is_main: bool, components: str = "copy",
           subfolder: str = "transformer", parts: tuple[str, ...] = ("model_index.json", "tokenizer", "text_encoder",
                                                                     "vae", "scheduler"), merge_lora=None) -> None:  # fmt: skip
    """Write target/<subfolder> (the trained transformer, diffusers layout) and the base model's other
    components (`parts`, those it has; the trained one is never copied over the export).

    components="copy" makes a self-contained folder that survives being moved or copied: each file
    is hard-linked where the file system allows (no extra space), copied otherwise.
    "symlink" links to the base model folder instead (small, but tied to where that folder is).
    """
    module = engine.module
    if merge_lora is not None and is_main:  # LoRA with merge: the adapters folded into a plain transformer
        module = merged_module(module, merge_lora)
    parts = tuple(p for p in parts if p != subfolder)
    if zero_stage == 3:  # parameters are partitioned: gather them to save a full copy
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if is_main:
                _write(module, base_model, target, components, subfolder, parts)
    elif is_main:
        _write(module, base_model, target, components, subfolder, parts)


def merged_module(module, lora):
    """A copy of a LoRA-adapted transformer with scale * B @ A added to each adapted weight and the
    adapters gone: a plain transformer of its class, for save_pretrained."""
    import copy

    from model.lora import adapter_state, layers, merge_lora

    base = {k.replace(".base_layer.", "."): v for k, v in module.state_dict().items() if ".lora_" not in k}
    adapters = {m: (a, b * (lora.alpha / lora.rank)) for m, (a, b) in layers(adapter_state(module)).items()}
    plain = copy.deepcopy(module)
    plain.unload_lora()  # diffusers' PeftAdapterMixin: the LoRA layers replaced by their base layers
    plain.load_state_dict(merge_lora(base, adapters))
    return plain


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, destination)


def _write(module, base_model: Path, target: Path, components: str, subfolder: str, parts: tuple[str, ...]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    staging = target / f".{subfolder}-tmp"
    shutil.rmtree(staging, ignore_errors=True)
    module.save_pretrained(staging)
    shutil.rmtree(target / subfolder, ignore_errors=True)
    staging.rename(target / subfolder)
    for name in parts:
        source, destination = base_model / name, target / name
        if not source.exists():
            continue
        if destination.is_symlink() or destination.is_file():
            destination.unlink()
        elif destination.is_dir():
            shutil.rmtree(destination)
        if components == "symlink":
            destination.symlink_to(source.resolve())
        elif source.is_dir():
            shutil.copytree(source.resolve(), destination, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(source.resolve()), str(destination))
