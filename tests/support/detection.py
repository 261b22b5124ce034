"""Helpers of the shot detection tests: detect a whole video in clip windows, compare cuts with the known ones."""

from __future__ import annotations

from curation.config import DetectorConfig
from curation.detect import detect_clip
from curation.split import plan_clips
from manifests.probe import probe


def detect_all(path, clip_minutes=10.0, kind="adaptive", overlap=48):
    p = probe(str(path))
    cuts = []
    windows = plan_clips(p.num_frames, p.fps, clip_minutes, overlap)
    for w in windows:
        result = detect_clip(
            str(path),
            w,
            p.pts,
            p.fps,
            p.rotation,
            DetectorConfig(kind=kind),
            thumbnail_every=12,
            thumbnail_max_side=128,
        )
        assert result.error is None
        cuts += result.cuts
    return p, windows, sorted(cuts)


def assert_cuts_match(found, expected, tolerance=1):
    assert len(found) == len(expected), (found, expected)
    assert all(abs(f - e) <= tolerance for f, e in zip(found, expected)), (found, expected)
