"""Tests of `curation/progress.py`: the one-line progress displays."""

from __future__ import annotations

import io

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


def test_on_a_terminal_the_line_is_rewritten_in_place_and_updates_are_throttled():
    stream = Terminal()
    progress = StageProgress("embed", 3, "videos", stream=stream, min_interval=3600)
    progress.step()
    progress.step()  # within the interval: not printed
    progress.step()  # the last one always is
    written = stream.getvalue()
    assert written.count("\r") == 1 and written.endswith("\n") and "embed 3/3 videos" in written
    assert "embed 2/3" not in written
