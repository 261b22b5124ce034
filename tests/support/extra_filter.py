"""A filter a user adds: its own decode-pass measurement and its rule, in this one file. The test
adds `too_red` to `curation.run.SHOT_FILTERS` (one list entry) and nothing else changes.
Importable by Ray workers (tests/ is a package path)."""

from __future__ import annotations

from curation.measures import Measure, needs


class Redness(Measure):
    """The mean red-minus-green of the small detection images at the keyframe samples."""

    name = "redness"

    def take(self, index, frame, image):
        return float(image[..., 2].mean() - image[..., 1].mean()) if image is not None else None

    def summarise(self, samples, shot):
        kept = [s for s in samples if s is not None]
        return {"redness": sum(kept) / len(kept) if kept else None}


@needs(Redness)
def too_red(shot, config):
    redness = shot.values.get("redness")
    return f"red: redness {redness:.0f}" if redness is not None and redness > 40 else None
