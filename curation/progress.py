"""A one-line progress display: videos done/total, hours of video processed, throughput."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, stream=None, min_interval: float = 1.0):
        # Resolved per run, not at import: sys.stderr may be replaced (redirected, captured) meanwhile.
        self.total, self.stream, self.min_interval = total, stream or sys.stderr, min_interval
        self.done = self.failed = self.skipped = self.shots = 0
        self.video_seconds = 0.0
        self.began = time.perf_counter()
        self._last_print = 0.0
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def video_done(
        self, video_seconds: float = 0.0, shots: int = 0, failed: bool = False, skipped: bool = False
    ) -> None:
        self.done += 1
        self.failed += failed
        self.skipped += skipped
        self.shots += shots
        self.video_seconds += video_seconds
        self._print(force=self.done == self.total)

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.began, 1e-9)
        return (
            f"videos {self.done}/{self.total} ({self.failed} failed, {self.skipped} already done) | "
            f"{self.video_seconds / 3600:.2f} h of video | {self.video_seconds / elapsed:.1f}x real time | "
            f"{self.shots} shots | {elapsed:.0f}s"
        )

    def _print(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last_print < self.min_interval:
            return
        self._last_print = now
        end = "\r" if self._tty and not force else "\n"
        self.stream.write(self.line() + end)
        self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")


class StageProgress:
    """A one-line counter for the stages after shot detection: `embed 3/10 videos | 12s`."""

    def __init__(self, stage: str, total: int, unit: str, stream=None, min_interval: float = 1.0):
        self.stage, self.total, self.unit, self.min_interval = stage, total, unit, min_interval
        self.stream = stream or sys.stderr
        self.done, self.began, self._last_print = 0, time.perf_counter(), 0.0
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def step(self, count: int = 1) -> None:
        self.done += count
        now = time.perf_counter()
        last = self.done >= self.total
        if not last and now - self._last_print < self.min_interval:
            return
        self._last_print = now
        line = f"{self.stage} {self.done}/{self.total} {self.unit} | {now - self.began:.0f}s"
        self.stream.write(line + ("\r" if self._tty and not last else "\n"))
        self.stream.flush()
