"""Ctrl-C and SIGTERM during training: the run stops at the next step boundary, after a checkpoint."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import torch


class TrainingInterrupted(Exception):
    """The run stopped on request after `step`, with a checkpoint of that step in `checkpoints`."""

    def __init__(self, step: int, max_steps: int, checkpoints: Path, is_main: bool):
        super().__init__(f"interrupted after step {step} of {max_steps}; checkpoint saved in {checkpoints}; "
                         "re-run the same command to resume")  # fmt: skip
        self.step, self.is_main = step, is_main


class StopRequests:
    """While training, SIGINT and SIGTERM ask the run to stop at the next step boundary (a checkpoint
    of that step is saved first); a second Ctrl-C stops at once. Outside the main thread (where
    Python cannot install handlers) nothing changes."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool = True):
        self.requested, self.announce, self._previous = False, announce, {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print("\nstopping after this step: saving a checkpoint (Ctrl-C again to quit at once)", file=sys.stderr,
                  flush=True)  # fmt: skip

    def agreed(self, device: torch.device) -> bool:
        """Whether every rank stops now: a checkpoint is collective, so one rank's request stops them all
        at the same step (one scalar all-reduce per step where there are several ranks)."""
        return any_rank([self.requested], device)[0]


class NonFiniteLoss(ValueError):
    """The loss became NaN or infinite: the run stops without a checkpoint of that step or an export."""


def any_rank(flags: list[bool], device: torch.device) -> list[bool]:
    """For each flag, whether it holds on any rank (every rank gets the same answers, from one all-reduce)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return list(flags)
    values = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return [bool(v) for v in values.tolist()]


def ignore_interrupts_in_workers(worker_id: int) -> None:
    """Data-loader workers leave Ctrl-C to the training process (which stops cleanly), instead of each
    dying with a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
