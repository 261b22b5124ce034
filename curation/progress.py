"""One-line progress displays: videos done/total with hours and throughput, and a counter per later stage."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

LOG_EVERY_SECONDS = 30.0  # frame progress written to a log (not a terminal) at most this often


class _Line:
    """A line rewritten in place on a terminal (one line per update elsewhere), at most once per
    `min_interval` seconds except for the last update."""

    def __init__(self, stream=None, min_interval: float = 1.0):
        # Resolved per run, not at import: sys.stderr may be replaced (redirected, captured) meanwhile.
        self.stream, self.min_interval = stream or sys.stderr, min_interval
        # None, not 0.0: perf_counter's origin is unspecified (on Linux, boot), so "long ago" is no number.
        self.began, self._last_print = time.perf_counter(), None
        self._tty = getattr(self.stream, "isatty", lambda: False)()

    def _emit(self, line: str, last: bool, interval: float | None = None) -> None:
        now = time.perf_counter()
        interval = self.min_interval if interval is None else interval
        if not last and self._last_print is not None and now - self._last_print < interval:
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
        self.frames_done = self.frames_total = 0
        self.frames_since: tuple[float, int] | None = None  # (time, frames) of the first frame report

    def video_done(
        self, video_seconds: float = 0.0, shots: int = 0, failed: bool = False, skipped: bool = False
    ) -> None:
        self.done += 1
        self.failed += failed
        self.skipped += skipped
        self.shots += shots
        self.video_seconds += video_seconds
        self._emit(self.line(), last=self.done == self.total)

    def frames(self, done: int, total: int) -> None:
        """Frames decoded so far of the videos in detection, for progress inside long videos (a terminal
        line is rewritten each second; a log gets a line every 30 s)."""
        now = time.perf_counter()
        if self.frames_since is None:
            self.frames_since = (now, done)
        self.frames_done, self.frames_total = done, total
        self._emit(self.line(), last=False, interval=self.min_interval if self._tty else LOG_EVERY_SECONDS)

    def line(self) -> str:
        elapsed = max(time.perf_counter() - self.began, 1e-9)
        return (
            f"videos {self.done}/{self.total} ({self.failed} failed, {self.skipped} already done) | "
            f"{self.video_seconds / 3600:.2f} h of video | {self.video_seconds / elapsed:.1f}x real time | "
            f"{self.shots} shots{self.frames_part()} | {elapsed:.0f}s"
        )

    def frames_part(self) -> str:
        """' | frames 34,000/172,800 in detection (20%), ETA 3 min' while videos are being decoded."""
        if not self.frames_total or self.frames_done >= self.frames_total or self.frames_since is None:
            return ""
        part = f" | frames {self.frames_done:,}/{self.frames_total:,} in detection ({self.frames_done / self.frames_total:.0%})"
        since, first = self.frames_since
        rate = (self.frames_done - first) / max(time.perf_counter() - since, 1e-9)
        if rate > 0:
            part += f", ETA {duration((self.frames_total - self.frames_done) / rate)}"
        return part

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


def duration(seconds: float) -> str:
    """'45 s', '12 min', '2.3 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class FrameBoard:
    """Frames decoded so far by each clip task in flight (a Ray actor the detect workers report to, so
    the driver can show progress inside a long video before its first clip is back)."""

    def __init__(self):
        self.frames: dict[str, int] = {}

    def report(self, key: str, frames: int) -> None:
        self.frames[key] = frames

    def read(self) -> dict[str, int]:
        return dict(self.frames)


def reporting(frames: Iterator, report: Callable[[int], None] | None, every_seconds: float = 2.0) -> Iterator:
    """`frames` unchanged; every few seconds, report(how many so far). A clock read per 64 frames."""
    if report is None:
        yield from frames
        return
    last = time.perf_counter()
    for count, frame in enumerate(frames, 1):
        yield frame
        if count % 64 == 0 and time.perf_counter() - last >= every_seconds:
            last = time.perf_counter()
            report(count)
