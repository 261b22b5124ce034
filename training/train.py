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

from training.config import TrainConfig, config_keys, load_config, suggest  # light: pydantic and yaml only


def train(config: TrainConfig) -> dict:
    """Build every component from `config` and train; returns the step, data position and history."""
    from training.trainer import Trainer

    return Trainer(config).train()


class Parser(argparse.ArgumentParser):
    """Errors as one short usage line and the error last; a flag that is a config key is named as one."""

    def error(self, message: str):
        unknown = message.split("unrecognized arguments: ", 1)[-1].split() if "unrecognized" in message else []
        flags = [a for a in unknown if a.startswith("--")]
        if flags:
            keys = [key for key, _, _ in config_keys()]
            flag = flags[0].lstrip("-").split("=")[0].replace("-", "_")
            argv = getattr(self, "argv", unknown)
            position = argv.index(flags[0]) if flags[0] in argv else len(argv)
            if "=" in flags[0]:
                value = flags[0].split("=", 1)[1]
            elif position + 1 < len(argv) and not argv[position + 1].startswith("--"):
                value = argv[position + 1]  # what argparse took for an override
            else:
                value = "VALUE"
            matches = [k for k in keys if k.split(".")[1] == flag]
            hint = (
                f" (did you mean {matches[0]}={value}?)" if matches else suggest(flag, [k.split(".")[1] for k in keys])
            )
            message = f"unknown flag {flags[0]}: config keys go as section.key=value{hint}; --help-config lists them"
        self.exit(2, f"usage: python training/train.py --config YAML [section.key=value ...]\nerror: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a training YAML (training/configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="section.key=value, e.g. optim.lr=1e-5 run.max_steps=100")
    parser.add_argument("--help-config", action="store_true", help="list every config key, its default and help")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)  # deepspeed
    parser.argv = list(sys.argv[1:] if argv is None else argv)  # for the error's suggestion
    args = parser.parse_args(argv)
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

    try:
        train(config)
    except (ValueError, DataError, CheckpointError) as err:  # RunIdentityError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
