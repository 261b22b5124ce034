"""One-line progress displays: videos done/total with hours and throughput, and a counter per later stage."""

from __future__ import annotations

import sys
import time


class _Line:
    """A line rewritten in place on a terminal (one line per update elsewhere), at most once per
    `min_interval` seconds except for the last update."""

    def __init__(self, stream=None, min_interval: float = 1.0):
        # Resolved per run, not at import: sys.stderr may be replaced (redirected, captured) meanwhile.
        self.stream, self.min_interval = stream or sys.stderr, min_interval
        self.began, self._last_print = time.perf_counter(), 0.0
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def _emit(self, line: str, last: bool) -> None:
        now = time.perf_counter()
        if not last and now - self._last_print < self.min_interval:
            return
        self._last_print = now
        self.stream.write(line + ("\r" if self._tty and not last else "\n"))
        self.stream.flush()


class Progress(_Line):
    """`videos 3/10 (0 failed, 1 already done) | 0.20 h of video | 35.2x real time | 120 shots | 20s`."""

    def __init__(self, total: int, stream=None, min_interval: float = 1.0):
        super().__init__(stream, min_interval)
        self.total = total
        self.done = self.failed = self.skipped = self.shots = 0
        self.video_seconds = 0.0

    def video_done(
        self, video_seconds: float = 0.0, shots: int = 0, failed: bool = False, skipped: bool = False
    ) -> None:
        self.done += 1
        self.failed += failed
        self.skipped += skipped
        self.shots += shots
        self.video_seconds += video_seconds
        self._emit(self.line(), last=self.done == self.total)

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.began, 1e-9)
        return (
            f"videos {self.done}/{self.total} ({self.failed} failed, {self.skipped} already done) | "
            f"{self.video_seconds / 3600:.2f} h of video | {self.video_seconds / elapsed:.1f}x real time | "
            f"{self.shots} shots | {elapsed:.0f}s"
        )

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")


class StageProgress(_Line):
    """A one-line counter for the stages after shot detection: `embed 3/10 videos | 12s`."""

    def __init__(self, stage: str, total: int, unit: str, stream=None, min_interval: float = 1.0):
        super().__init__(stream, min_interval)
        self.stage, self.total, self.unit, self.done = stage, total, unit, 0

    def step(self, count: int = 1) -> None:
        self.done += count
        elapsed = time.perf_counter() - self.began
        self._emit(f"{self.stage} {self.done}/{self.total} {self.unit} | {elapsed:.0f}s", last=self.done >= self.total)
