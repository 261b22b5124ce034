"""Process group and DeepSpeed engine, the same code for `python`, `deepspeed` and `torchrun` launches."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from functools import partial
from pathlib import Path

import torch

from training.config import TrainConfig


def single_process_group() -> None:
    """Where no launcher set RANK (plain `python training/train.py`): the environment of a group of one."""
    if "RANK" in os.environ:
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def setup_distributed(config: TrainConfig) -> tuple[torch.device, int, int]:
    """Fill in a single-process environment when no launcher did, pick the device, join the group."""
    use_cuda = config.run.device == "cuda" or (config.run.device == "auto" and torch.cuda.is_available())
    if not use_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # must be set before deepspeed is imported
    single_process_group()
    cpu_ranks = not use_cuda and int(os.environ["WORLD_SIZE"]) > 1
    prepare_cpu_comm_op(needed=cpu_ranks, announce=os.environ["RANK"] == "0")
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo", verbose=False)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local), rank, world
    return torch.device("cpu"), rank, world


SHM_OP = "deepspeed_shm_comm"  # DeepSpeed's shared-memory all-reduce between CPU ranks, compiled on first use


def extensions_folder() -> Path:
    """Where compiled ops go: one folder per Python environment. torch's default is shared by every
    environment of one Python version, so switching between two virtualenvs rebuilt the op each time."""
    tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:10]
    return Path.home() / ".cache" / "torch_extensions" / f"py{sys.version_info[0]}{sys.version_info[1]}_{tag}"


def prepare_cpu_comm_op(needed: bool, announce: bool) -> None:
    """DeepSpeed compiles its CPU communication op when the process group starts (1-2 minutes, silent).
    One rank never uses it: it is not built then. Several CPU ranks do: say so before the first build."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(extensions_folder()))
    if os.environ.get("DS_ACCELERATOR") != "cpu":
        return
    import deepspeed.ops

    if not needed:
        deepspeed.ops.__compatible_ops__[SHM_OP] = False  # DeepSpeed builds only ops it lists as compatible
        return
    built = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / SHM_OP / f"{SHM_OP}.so"
    if announce and not built.is_file():
        print(f"building DeepSpeed's CPU communication op for the ranks (once per environment, 1-2 minutes; kept in "
              f"{built.parent})", file=sys.stderr, flush=True)  # fmt: skip


def deepspeed_config(config: TrainConfig) -> dict:
    """Our YAML is the source of truth for batch sizes, clipping and precision; a JSON adds the rest."""
    ds = json.loads(config.run.deepspeed_config.read_text()) if config.run.deepspeed_config else {}
    zero = ds.setdefault("zero_optimization", {})
    zero["stage"] = config.run.zero_stage  # the YAML decides (export gathers ZeRO-3 weights by it)
    if config.run.offload_optimizer:
        zero.setdefault("offload_optimizer", {"device": "cpu", "pin_memory": True})
    ds.update(
        train_micro_batch_size_per_gpu=config.optim.batch_size,
        gradient_accumulation_steps=config.optim.gradient_accumulation,
        gradient_clipping=config.optim.max_grad_norm,
        steps_per_print=10**9,
        wall_clock_breakdown=False,
    )
    ds["bf16"] = {"enabled": config.run.precision == "bf16"}
    ds.pop("fp16", None)  # bf16 or fp32 only: fp16 overflows in CogVideoX-5B and is unsupported on CPU
    ds["zero_allow_untested_optimizer"] = True
    return ds


def warmup_then_constant(warmup_steps: int, step: int) -> float:
    """LR factor of diffusers' constant_with_warmup (the official schedule): step / warmup, then 1."""
    return min(1.0, step / warmup_steps) if warmup_steps > 0 else 1.0


def build_engine(model, config: TrainConfig):
    import deepspeed

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr, betas=config.optim.betas, eps=config.optim.eps,
                                  weight_decay=config.optim.weight_decay)  # fmt: skip
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_then_constant, config.optim.warmup_steps))
    engine, optimizer, _, schedule = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=schedule, config=deepspeed_config(config)
    )
    return engine, schedule
