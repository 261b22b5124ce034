"""Tests of `curation/detect.py`: shot detection in one clip window with PySceneDetect's detectors,
and shots from cut lists."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from curation.config import DetectorConfig
from curation.cuts import shots_from_cuts
from manifests.probe import probe
from tests.conftest import CLIP_MINUTES
from tests.support.detection import assert_cuts_match, detect_all
from tests.support.transnet import detect


class StandIn:
    """A cheap network with TransNetV2's window contract (100 frames in, the middle 50 out), whose
    values depend on the whole window: a frame's change against the window's mean change. Tests of
    the streaming logic (clip boundaries, late cuts) use it; the real network is tested above."""

    def __init__(self, batch_windows: int = 1):
        self.batch_windows = batch_windows

    def windows(self, batch: torch.Tensor) -> np.ndarray:
        x = batch.float().mean(dim=(2, 3, 4))  # (B, 100)
        change = torch.zeros_like(x)
        change[:, 1:] = (x[:, 1:] - x[:, :-1]).abs()
        score = change / (change.mean(dim=1, keepdim=True) * 8 + 1e-3)
        spread = torch.maximum(score, torch.nn.functional.max_pool1d(score[:, None], 5, 1, 2)[:, 0] * 0.9)
        return torch.stack([score, spread], dim=-1)[:, 25:75].clamp(0, 1).numpy()


@pytest.mark.parametrize("kind", ["adaptive", "content"])
def test_detected_cuts_match_the_known_cuts(multi_shot_video, kind):
    _, _, cuts = detect_all(multi_shot_video.path, kind=kind)
    assert_cuts_match(cuts, multi_shot_video.cuts)


def test_cuts_near_clip_boundaries_are_found_once_and_spanning_shot_stays_whole(long_video):
    p, windows, cuts = detect_all(long_video.path, clip_minutes=CLIP_MINUTES)
    assert len(windows) >= 4  # really split into clips
    assert_cuts_match(cuts, long_video.cuts)
    spans = shots_from_cuts(cuts, p.num_frames, 15)
    boundaries = [w.start_frame for w in windows[1:]]
    spanning = [s for s in spans if any(s[0] < b < s[1] for b in boundaries)]
    assert any(abs(a - 95) <= 1 and abs(b - 200) <= 1 for a, b in spanning), spans
    # Same result as one continuous pass over the whole video.
    _, _, single_pass = detect_all(long_video.path, clip_minutes=10.0)
    assert cuts == single_pass


def test_the_decode_pass_finds_hard_cuts_exactly_and_keeps_frames_by_the_one_rule(detector, transition_video):
    """The real network in the decode pass: hard cuts frame-exact, dissolves at their middle (+-2).
    Cuts come up to ~250 frames late; the frames kept for embedding still follow `pass_frames` and
    are the pixels a re-decode from the source gives."""
    from curation.shot_frames import FrameSpec
    from manifests.frames import read_shot_frames

    spec = FrameSpec()
    detector.batch_windows = 1
    (result,) = detect(transition_video, DetectorConfig(kind="transnetv2"), detector=detector, specs={"embed": spec})
    assert result.error is None and result.frames_decoded == transition_video.num_frames
    assert len(result.cuts) == len(transition_video.cuts)
    for found, true, kind in zip(result.cuts, transition_video.cuts, transition_video.kinds):
        assert found == true if kind == "cut" else abs(found - true) <= 2, (kind, found, true)
    p = probe(str(transition_video.path))
    assert sorted(result.frames.shots) == [0, *result.cuts]
    for start, kept in result.frames.shots.items():
        end = result.frames.ends[start]
        frames = kept["embed"].frames
        assert frames == spec.pass_frames(start, end)
        row = {"source_path": str(transition_video.path), "start_frame": start, "end_frame": end,
               "num_frames": end - start, "start_pts": int(p.pts[start]), "fps": p.fps, "rotation": 0,
               "time_base": f"{p.time_base.numerator}/{p.time_base.denominator}"}  # fmt: skip
        again = read_shot_frames(row, indices=[f - start for f in frames], max_side=spec.read_size())
        assert np.array_equal(again, kept["embed"].images)


def test_clip_boundaries_anywhere_give_the_whole_videos_cuts(transition_video):
    """Windows sit on the absolute frame grid, so a clip predicts what whole-video inference does:
    the clips' owned cuts, forced edges and transitions together are the single pass's, wherever
    the boundaries fall (here inside both dissolves), for TransNetV2 and for the combination."""
    from curation.cuts import shots_from_cuts
    from curation.split import ClipWindow

    n = transition_video.num_frames
    for kind, drop, bounds in [("transnetv2", "drop", [0, 140, 252, n]), ("adaptive+transnetv2", "keep", [0, 140, n])]:
        config = DetectorConfig(kind=kind, transition_frames=drop)
        (whole,) = detect(transition_video, config, detector=StandIn())
        windows = [ClipWindow(i, a, b, max(0, a - config.context_frames), min(n, b + config.context_frames))
                   for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]  # fmt: skip
        parts = detect(transition_video, config, windows, StandIn())
        assert len(whole.cuts) >= 3 and (drop == "keep" or whole.transitions), (whole.cuts, whole.transitions)
        assert sorted(c for r in parts for c in r.cuts) == whole.cuts, kind
        forced = {c for r in parts for c in r.forced}
        assert shots_from_cuts([c for r in parts for c in r.cuts], n, 15, forced) == shots_from_cuts(
            whole.cuts, n, 15, set(whole.forced)
        )
        assert sorted(t for r in parts for t in r.transitions) == whole.transitions


def test_dropped_transition_frames_become_their_own_filtered_span(detector, transition_video):

    detector.batch_windows = 1
    config = DetectorConfig(kind="transnetv2", transition_frames="drop")
    (result,) = detect(transition_video, config, detector=detector)
    gradual = [s for s, kind in zip(transition_video.spans, transition_video.kinds) if kind == "dissolve"]
    assert len(result.transitions) == len(gradual)
    for (start, end), (true_start, true_end) in zip(result.transitions, gradual):
        assert start in result.forced and end in result.forced
        assert abs(start - true_start) <= 3 and abs(end - true_end) <= 3  # the all-frames head's extent
    hard = [c for c, kind in zip(transition_video.cuts, transition_video.kinds) if kind == "cut"]
    assert set(hard) <= set(result.cuts) and not set(hard) & set(result.forced)
    with pytest.raises(ValueError, match="needs --detector transnetv2"):
        DetectorConfig(kind="adaptive", transition_frames="drop")


def test_detection_stage_gets_a_gpu_share_only_where_transnet_runs_and_gpus_exist(monkeypatch):
    import ray

    from curation.config import CurationConfig
    from curation.detect import detect_gpus

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8, "GPU": 2})
    assert detect_gpus(CurationConfig(output="o", shots={"detector": {"kind": "transnetv2"}}).shots) == 0.25
    assert detect_gpus(CurationConfig(output="o").shots) == 0.0
    assert (
        detect_gpus(CurationConfig(output="o", shots={"gpus_per_task": 1, "detector": {"kind": "transnetv2"}}).shots)
        == 1
    )
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8})
    assert detect_gpus(CurationConfig(output="o", shots={"detector": {"kind": "adaptive+transnetv2"}}).shots) == 0.0


def test_clips_are_split_only_into_the_task_slots_left_idle_and_never_under_the_minimum_piece():
    from types import SimpleNamespace

    from curation.config import CurationConfig
    from curation.detect import Detect
    from curation.tasks import ClipWindow, VideoTask

    def plan(cpus, minutes, clips=1, in_flight=0, reliable=True, **shots):
        stage = Detect(None, CurationConfig(output="o", shots=shots).shots)
        stage.cpus, stage.in_flight = cpus, in_flight
        frames = round(minutes * 60 * 24)
        bounds = [frames * i // clips for i in range(clips + 1)]
        task = VideoTask("v.mp4", probe=SimpleNamespace(fps=24.0, num_frames=frames, pts_reliable=reliable))
        task.clips = [ClipWindow(i, a, b, a, b) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        return [len(pieces) for pieces in stage.plan(task).values()]

    assert plan(8, 10) == [8] and plan(16, 10) == [10]  # at most one piece per --piece-min-seconds
    assert plan(16, 20, clips=2) == [8, 8] and plan(2, 20, clips=2) == [1, 1]
    assert plan(8, 10, in_flight=6) == [2] and plan(8, 10, in_flight=7) == [1]  # other videos' tasks count
    assert plan(8, 10, cpus_per_task=4) == [2]
    assert plan(8, 1.5) == [1] and plan(8, 10, piece_min_seconds=0) == [1] and plan(8, 10, reliable=False) == [1]


def test_a_long_video_shows_frames_decoded_and_an_eta_before_its_clips_are_back(
    ray_local, tmp_path, long_video, monkeypatch, capsys
):
    """The clip tasks report decoded frames to a board the driver reads while it waits (thresholds
    lowered here: a real run does so for videos of 2 minutes and more, every 2 s, logged every 30 s)."""
    from curation.detect import Detect
    from curation.executor import Executor
    from tests.support.jobs import curate_one

    monkeypatch.setattr(Detect, "LONG_VIDEO_SECONDS", 0.0)
    monkeypatch.setattr(Detect, "REPORT_EVERY_SECONDS", 0.0)
    monkeypatch.setattr(Executor, "WAKE_SECONDS", 0.01)
    monkeypatch.setattr("curation.progress.LOG_EVERY_SECONDS", 0.0)
    # This video's clips decode in well under a second, less than the board actor's own start on a
    # loaded 2-core machine (a real long video takes minutes), so the test waits for the board first.
    started = Detect.frame_board

    def live_board(self, driver):
        board = started(self, driver)
        ray_local.get(board.read.remote())
        return board

    monkeypatch.setattr(Detect, "frame_board", live_board)
    assert curate_one(tmp_path / "out", long_video) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if " in detection (" in line]
    assert lines, "no frame progress was shown"
    assert all(re.search(r"\| frames [\d,]+/[\d,]+ in detection \(\d+%\)", line) for line in lines)


def test_a_clip_in_pieces_curates_to_the_rows_one_task_per_clip_gives(ray_local, tmp_path, long_video):
    """Where a video's clips leave cores idle (here 2 CPUs, one clip), each clip is decoded in pieces,
    one task each: every table holds the rows one task per clip gives (the shot [200, 290) spans the
    pieces' boundary at 216), and the kinds video's rows are the recorded ones; only the clip rows'
    decoded frames grow (each piece decodes its own context)."""
    import json
    from pathlib import Path

    from curation.run import main
    from manifests import read_table
    from tests.support.curation_reference import KIND_FLAGS, record, write_kinds_video
    from tests.support.reference_check import assert_same_rows

    def without_decoded(tables):
        return tables | {"clips": [{k: v for k, v in row.items() if k != "frames_decoded"} for row in tables["clips"]]}

    common = ["--input", str(long_video.path), "--within", "video", "--scenes", "2", "--keep-all",
              "--min-relevance", "-10", "--min-shot-seconds", "1"]  # fmt: skip
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert main([*common, "--output", str(whole), "--piece-min-seconds", "0"]) == 0
    assert main([*common, "--output", str(pieces), "--piece-min-seconds", "2"]) == 0
    (one,), (two,) = read_table(whole, "clips")["frames_decoded"], read_table(pieces, "clips")["frames_decoded"]
    assert one == long_video.num_frames < two  # really decoded in pieces
    assert any(s < 216 < e for s, e in read_table(pieces, "shots")[["start_frame", "end_frame"]].values)
    assert_same_rows(without_decoded(record(whole)), without_decoded(record(pieces)))

    kinds = tmp_path / "kinds"
    video = write_kinds_video(tmp_path / "videos")
    assert main(["--input", str(video), "--output", str(kinds), *KIND_FLAGS, "--piece-min-seconds", "2"]) == 0
    before = json.loads((Path(__file__).resolve().parents[1] / "data" / "curation_kinds_reference.json").read_text())
    after = without_decoded(json.loads(json.dumps(record(kinds))))
    for table in before:
        assert_same_rows(without_decoded(before)[table], after[table], table)
    assert read_table(kinds, "clips")["frames_decoded"].iloc[0] > before["clips"][0]["frames_decoded"]
