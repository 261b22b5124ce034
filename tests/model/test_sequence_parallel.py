"""Tests of `model/sequence_parallel.py`: Ulysses sequence parallelism for the dual-mask transformer:
many scenes across GPUs, mask exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support import REPO

WORKER = REPO / "tests" / "support" / "sp_worker.py"


ABORT = "terminate called without an active exception"


def run_ranks(ranks: int, mode: str, out: Path, device: str = "cpu") -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"SP_DEVICE": device}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        str(ranks),
        str(WORKER),
        mode,
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    if done.returncode != 0 and ABORT in done.stderr:
        # Seen once in ~10 runs on the 2-core CI machine with 4 ranks: a rank aborts in C++ thread
        # teardown (SIGABRT, before any result is computed). A crash is retried once; a wrong
        # result never is.
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(ranks)]


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 4])
def test_sharded_forward_loss_and_gradients_equal_one_rank(tmp_path, ranks):
    for result in run_ranks(ranks, "model", tmp_path):
        for backend in ("segmented", "dense"):
            numbers = result[backend]
            assert numbers["output"] < 1e-5 and numbers["loss"] < 1e-6, (backend, numbers)
            assert numbers["grad"] < 1e-5 * max(1.0, numbers["grad_scale"]), (backend, numbers)
        assert "heads (3) to divide evenly" in result["indivisible_heads"]


@pytest.mark.slow
@pytest.mark.parametrize("ranks", [2, 4])
def test_sharded_generation_and_expansion_equal_one_rank(tmp_path, ranks):
    for result in run_ranks(ranks, "generate", tmp_path):
        assert result["latents"] < 1e-4 and result["expanded"] < 1e-4, result


@pytest.mark.slow
def test_wan_sharded_on_two_ranks_equals_one_rank(tmp_path):
    """Wan: full and sparse self-attention on both backends (unequal scenes, a global caption, a clean
    scene) in forward, loss and every gradient; and a generated and expanded story."""
    for result in run_ranks(2, "wan", tmp_path):
        for key in ("full-segmented", "full-dense", "sparse-segmented", "sparse-dense"):
            numbers = result[key]
            assert numbers["output"] < 1e-5 and numbers["loss"] < 1e-6, (key, numbers)
            assert numbers["grad"] < 1e-5 * max(1.0, numbers["grad_scale"]), (key, numbers)
        assert result["latents"] < 1e-4 and result["expanded"] < 1e-4, result


@pytest.mark.slow
def test_a_zero2_training_run_with_sequence_parallelism_equals_one_rank(tmp_path, manifest, tiny_model):  # noqa: F811
    from tests.support.training import CONFIG, config_for
    from training.train import train

    overrides = ["data.stage=sft", "data.scenes=3", "objective.cond_prob=0.5", "run.max_steps=3", "optim.lr=1e-3",
                 "data.allow_uncaptioned=false", "data.caption_dropout=0"]  # fmt: skip
    single = train(config_for(manifest, tiny_model, tmp_path / "one", *overrides))["history"]
    out = tmp_path / "sp"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(CONFIG.parents[1] / "train.py"),
               "--config", str(CONFIG), f"data.manifest={manifest}", f"model.path={tiny_model}", f"run.output={out}",
               "run.sequence_parallel=2", "run.zero_stage=2", *overrides]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    if done.returncode != 0 and ABORT in done.stderr:
        # Seen once in ~10 runs on the 2-core CI machine with 4 ranks: a rank aborts in C++ thread
        # teardown (SIGABRT, before any result is computed). A crash is retried once; a wrong
        # result never is.
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sharded = json.loads((out / "history.json").read_text())
    np.testing.assert_allclose([h["loss"] for h in sharded], [h["loss"] for h in single], rtol=1e-5)
    assert [h["consumed"] for h in sharded] == [h["consumed"] for h in single]  # one group = one sample stream
    assert len(list((out / "checkpoints" / "step_3").glob("zero_pp_rank_*_optim_states.pt"))) == 2  # ZeRO shards


@pytest.mark.slow
def test_generate_under_torchrun_writes_what_one_process_writes(tmp_path):
    import torch
    from safetensors.torch import load_file

    from model.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "model")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps(["a man walks", "a woman sits", "a dog runs"]))
    args = ["--model", str(model), "--prompts", str(prompts), "--steps", "2", "--height", "32", "--width", "32",
            "--num-frames", "9", "--dtype", "fp32"]  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "model.generate", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "model.generate",
                          *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert two.returncode == 0, two.stderr[-2000:]
    a = load_file(tmp_path / "one" / "latents.safetensors")["latents"]
    b = load_file(tmp_path / "two" / "latents.safetensors")["latents"]
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert json.loads((tmp_path / "two" / "generation.json").read_text())["settings"]["sequence_parallel"] == 2


@pytest.mark.cuda
def test_ulysses_over_nccl_on_the_gpus_equals_one_rank(tmp_path):
    """One rank per GPU (1 GPU: a group of one, which still runs every NCCL exchange; 2 when there
    are 2); the CogVideoX and Wan models in fp32 on the GPU, forward and every gradient."""
    import torch

    ranks = min(2, torch.cuda.device_count())
    for result in run_ranks(ranks, "model", tmp_path / "cogvideox", device="cuda"):
        for backend in ("segmented", "dense"):
            numbers = result[backend]
            assert numbers["output"] < 1e-4 and numbers["grad"] < 1e-4 * max(1.0, numbers["grad_scale"]), numbers
    for result in run_ranks(ranks, "wan", tmp_path / "wan", device="cuda"):
        for key in ("full-segmented", "full-dense", "sparse-segmented", "sparse-dense"):
            numbers = result[key]
            assert numbers["output"] < 1e-4 and numbers["grad"] < 1e-4 * max(1.0, numbers["grad_scale"]), (key, numbers)
