"""TransNetV2 cut detection over a whole video, for tests that compare the decode pass with it."""

from __future__ import annotations


def detect(video, config, windows=None, detector=None, specs=None):
    from curation.detect import detect_clip
    from curation.split import plan_clips
    from manifests.probe import probe

    p = probe(str(video.path))
    windows = windows or plan_clips(p.num_frames, p.fps, 100, 0)
    return [detect_clip(str(video.path), w, p.pts, p.fps, 0, config, thumbnail_every=12, thumbnail_max_side=64,
                        transnet=detector, frame_specs=specs) for w in windows]  # fmt: skip
