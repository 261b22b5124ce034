"""Mask²DiT training, both stages: pretrain (concatenated single shots) and SFT (curated combinations).

    deepspeed training/train.py --config training/configs/pretrain.yaml
    deepspeed --hostfile hosts training/train.py --config training/configs/sft.yaml
    torchrun --nproc-per-node 8 training/train.py --config training/configs/sft.yaml optim.lr=5e-6
    python training/train.py --config training/configs/tiny.yaml          # one process, CPU works

The stages differ by config (data.stage, objective.cond_prob) and sampler, not by code; the loop is
`training.trainer.Trainer`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse

from training.checkpoint import CheckpointError
from training.config import TrainConfig, load_config
from training.data import DataError
from training.trainer import SkipCounter, Trainer, earlier_history  # noqa: F401  (re-exported for users)


def train(config: TrainConfig) -> dict:
    """Build every component from `config` and train; returns the step, data position and history."""
    return Trainer(config).train()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-5 run.max_steps=100")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    args = parser.parse_args(argv)
    try:
        train(load_config(args.config, args.overrides))
    except (ValueError, DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
