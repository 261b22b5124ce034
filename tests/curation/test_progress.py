"""Tests of `curation/progress.py`: the one-line progress displays."""

from __future__ import annotations

import io

import pytest

from curation.progress import Progress, StageProgress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_video_progress_counts_failures_skips_hours_and_shots_and_ends_with_a_newline():
    stream = io.StringIO()
    progress = Progress(3, stream=stream, min_interval=0.0)
    progress.video_done(video_seconds=1800, shots=40)
    progress.video_done(failed=True)
    progress.video_done(skipped=True)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and lines[-1].startswith("videos 3/3 (1 failed, 1 already done) | 0.50 h of video")
    assert "| 40 shots |" in lines[-1]


@pytest.mark.parametrize("clock_origin", [3.0, 1e6], ids=["just-booted", "up-for-days"])
def test_on_a_terminal_the_line_is_rewritten_in_place_and_updates_are_throttled(monkeypatch, clock_origin):
    """The first update always prints, whatever perf_counter's origin (it counts from boot on Linux)."""
    clock = iter(clock_origin + 0.001 * i for i in range(100))
    monkeypatch.setattr("curation.progress.time.perf_counter", lambda: next(clock))
    stream = Terminal()
    progress = StageProgress("embed", 3, "videos", stream=stream, min_interval=3600)
    progress.step()
    progress.step()  # within the interval: not printed
    progress.step()  # the last one always is
    written = stream.getvalue()
    assert written.count("\r") == 1 and written.endswith("\n") and "embed 3/3 videos" in written
    assert "embed 1/3" in written and "embed 2/3" not in written


def test_frames_in_detection_show_their_share_and_an_eta(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("curation.progress.time.perf_counter", lambda: now[0])
    stream = io.StringIO()
    progress = Progress(1, stream=stream, min_interval=0.0)
    monkeypatch.setattr("curation.progress.LOG_EVERY_SECONDS", 0.0)
    progress.frames(0, 172_800)  # the first report starts the rate's clock
    now[0] += 10.0
    progress.frames(43_200, 172_800)  # a quarter in 10 s: 30 s to go
    assert "| frames 43,200/172,800 in detection (25%), ETA 30 s |" in stream.getvalue().splitlines()[-1]


def test_reporting_passes_frames_through_and_reports_counts():
    from curation.progress import reporting

    counts = []
    assert list(reporting(iter(range(200)), counts.append, every_seconds=0.0)) == list(range(200))
    assert counts == [64, 128, 192]
    assert list(reporting(iter(range(3)), None)) == [0, 1, 2]


def test_duration_reads_in_the_unit_that_fits():
    from curation.progress import duration

    assert (duration(45), duration(720), duration(8280)) == ("45 s", "12 min", "2.3 h")
