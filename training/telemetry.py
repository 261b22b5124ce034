"""Training telemetry: TensorBoard scalars and a progress bar on rank 0, throughput and data-wait accounting
(the evaluation metrics are `model/metrics.py`)."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path

import torch


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # peak RSS (KiB on Linux)


class Metrics:
    def __init__(self, folder: Path, enabled: bool, total_steps: int, start_step: int):
        self.enabled = enabled
        self.writer = self.bar = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            from tqdm import tqdm

            self.writer = SummaryWriter(str(folder))
            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)
        self.window_start = time.perf_counter()
        self.data_wait = 0.0
        self.samples = self.tokens = 0

    def waited(self, seconds: float) -> None:
        self.data_wait += seconds

    @contextmanager
    def timing_data(self):
        """Time spent waiting for the data loader (reported as data_wait_fraction)."""
        began = time.perf_counter()
        try:
            yield
        finally:
            self.waited(time.perf_counter() - began)

    def add(self, samples: int, tokens: int) -> None:
        self.samples += samples
        self.tokens += tokens

    def count_batch(self, batch_size: int, video_tokens: int, text: torch.Tensor, world: int) -> None:
        """Samples and tokens (video tokens after patching, plus text) of one micro-batch, all ranks."""
        self.add(batch_size * world, (video_tokens + text.shape[1]) * batch_size * world)

    def step(self, step: int, scalars: dict[str, float], log: bool) -> dict[str, float]:
        """Advance the bar; every `log` steps, write throughput and the given scalars."""
        if self.bar:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{scalars['loss']:.4f}")
        if not log:
            return {}
        elapsed = max(time.perf_counter() - self.window_start, 1e-9)
        scalars = scalars | {
            "samples_per_s": self.samples / elapsed,
            "tokens_per_s": self.tokens / elapsed,
            "data_wait_fraction": self.data_wait / elapsed,
        }
        if self.writer:
            for name, value in scalars.items():
                self.writer.add_scalar(f"train/{name}", value, step)
            self.writer.flush()
        self.window_start, self.data_wait, self.samples, self.tokens = time.perf_counter(), 0.0, 0, 0
        return scalars

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        if self.bar:
            self.bar.close()
        if self.writer:
            self.writer.close()
