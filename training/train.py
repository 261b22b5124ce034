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

from manifests.hints import did_you_mean
from training.config import TrainConfig, config_keys, load_config  # light: pydantic and yaml only


def train(config: TrainConfig) -> dict:
    """Build every component from `config` and train; returns the step, data position and history."""
    from training.trainer import Trainer

    return Trainer(config).train()


class Parser(argparse.ArgumentParser):
    """Errors as one short usage line and the error last."""

    def error(self, message: str):
        self.exit(2, f"usage: python training/train.py --config YAML [section.key=value ...]\nerror: {message}\n")


def unknown_flag_message(flag: str, argv: list[str]) -> str:
    """An unknown --flag, named as the config key it probably is (`--lr 1e-5` -> optim.lr=1e-5)."""
    keys = [key for key, _, _ in config_keys()]
    name = flag.lstrip("-").split("=")[0].replace("-", "_")
    position = argv.index(flag) if flag in argv else len(argv)
    if "=" in flag:
        value = flag.split("=", 1)[1]
    elif position + 1 < len(argv) and not argv[position + 1].startswith("--"):
        value = argv[position + 1]  # what argparse took for an override
    else:
        value = "VALUE"
    matches = [k for k in keys if k.split(".")[1] == name]
    hint = f" (did you mean {matches[0]}={value}?)" if matches else did_you_mean(name, [k.split(".")[1] for k in keys])
    return f"unknown flag {flag}: config keys go as section.key=value{hint}; --help-config lists them"


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a training YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-5 run.max_steps=100")
    parser.add_argument("--help-config", action="store_true", help="list every config key, its default and help")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    flags = [a for a in unknown if a.startswith("--")]
    if flags:
        parser.error(unknown_flag_message(flags[0], argv))
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.help_config:
        for key, default, text in config_keys():
            print(f"{key:<32} {default:<22} {text}")
        return 0
    if args.config is None:
        parser.error("--config is required (e.g. --config training/configs/tiny.yaml); --help-config lists the keys")
    try:
        config = load_config(args.config, args.overrides)  # every mistake is found here, before torch loads
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from training.checkpoint import CheckpointError
    from training.data import DataError
    from training.interrupt import TrainingInterrupted

    try:
        train(config)
    except (ValueError, DataError, CheckpointError) as err:  # RunIdentityError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as stopped:
        if stopped.is_main:
            print(str(stopped), file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
