"""Tests of `curation/duplicates.py`: a replayed shot matches its original after re-encoding, other
shots of the same synthetic scene do not, and a copy of a copy points at the first."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from curation import duplicates
from curation.config import CurationConfig
from curation.duplicates import BLOCK, Signature, find_duplicates, signature, similarity
from curation.measures import ShotSpan
from curation.samples import synthetic_shot_frames


def _reencoded(frames, crf):
    """The frames through H.264 at a given quality and back (BGR)."""
    import io

    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def _signatures(frames):
    measure = Signature()
    samples = [measure.take(i, None, f) for i, f in enumerate(frames) if i % 12 == 0]
    return measure.summarise(samples, ShotSpan(0, len(frames), 320, 180, 0))["signatures"]


def test_a_replay_reencoded_matches_its_original_and_other_shots_do_not():
    rng = np.random.default_rng(1)
    shots = [list(synthetic_shot_frames(i, 48, 320, 180, rng)) for i in range(3)]
    originals = [_signatures(_reencoded(s, 18)) for s in shots]
    replay = _signatures(_reencoded(shots[0], 30))  # the same frames, encoded again at a lower quality
    assert similarity(replay, originals[0]) > 0.99
    assert max(similarity(replay, originals[i]) for i in (1, 2)) < 0.9
    small = _signatures([cv2.resize(f, (160, 90)) for f in _reencoded(shots[0], 30)])  # replayed smaller
    assert similarity(small, originals[0]) > 0.99
    # The same set-up (background) with the action elsewhere: a return to the set-up, not a repeat.
    elsewhere = _signatures(_reencoded(list(synthetic_shot_frames(0, 48, 320, 180, np.random.default_rng(9))), 18))
    assert 0.9 < similarity(elsewhere, originals[0]) < CurationConfig(output="o").shots.duplicate_similarity
    found = find_duplicates([*originals, replay, replay], threshold=0.99)
    assert [f[0] if f else None for f in found] == [None, None, None, 0, 0]  # a copy of a copy: the first


def test_a_flat_frame_has_no_signature():
    assert signature(np.full((36, 64, 3), 40, np.uint8)) is None
    assert find_duplicates([None, None], 0.9) == [None, None]


def _pairwise(signatures, threshold):
    """The rule written pair by pair (what find_duplicates computed before it was vectorised)."""
    found = [None] * len(signatures)
    for j, later in enumerate(signatures):
        for i in range(j):
            if later is None or signatures[i] is None or found[i] is not None:
                continue
            score = similarity(later, signatures[i])
            if score >= threshold:
                found[j] = (i, score)
                break
    return found


@pytest.mark.parametrize("block", [BLOCK, 64])  # one product, or a product per shot or few shots
def test_the_search_over_all_earlier_shots_at_once_equals_the_pairwise_rule(block, monkeypatch):
    monkeypatch.setattr(duplicates, "BLOCK", block)
    rng = np.random.default_rng(4)

    def unit(rows):
        rows = rows - rows.mean(axis=1, keepdims=True)
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)

    originals = [unit(rng.normal(size=(int(rng.integers(1, 9)), 2304))) for _ in range(30)]
    signatures = []
    for i, original in enumerate(originals):
        signatures.append(original if i % 7 else None)  # shots without a signature (flat) in between
        if i % 4 == 3:  # replays: noisy copies of an earlier shot, some partly of another one
            source = originals[int(rng.integers(0, i + 1))]
            copy = unit(source + rng.normal(scale=float(rng.choice([0.0005, 0.002, 0.01])), size=source.shape))
            signatures.append(np.concatenate([copy, originals[i][:1]]) if i % 8 == 3 else copy)
    for threshold in (0.9, 0.99, 0.999):
        expected, found = _pairwise(signatures, threshold), find_duplicates(signatures, threshold)
        assert [f and f[0] for f in found] == [e and e[0] for e in expected]
        assert any(found), "the data must hold repeats for the comparison to mean something"
        for f, e in zip(found, expected):
            if f:
                assert abs(f[1] - e[1]) < 1e-5
