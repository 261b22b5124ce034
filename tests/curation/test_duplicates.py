"""Tests of `curation/duplicates.py`: a replayed shot matches its original after re-encoding, other
shots of the same synthetic scene do not, and a copy of a copy points at the first."""

from __future__ import annotations

import av
import cv2
import numpy as np

from curation.config import CurationConfig
from curation.duplicates import Signature, find_duplicates, signature, similarity
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
