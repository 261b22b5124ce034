"""A shot filter of its own: mostly black shots (fades held, night footage without detail) teach a
generator little. `--min-mean-luma` sets the threshold (0, the default, keeps every shot).

The measurement (`Luma`) is taken in the detection pass, on the small frames it samples for
keyframes: their mean luma, stored per shot as `mean_luma`.
"""

from __future__ import annotations

import numpy as np

from curation.config import CurationConfig
from curation.measures import Measure, ShotSpan, needs
from curation.shot_filters import ShotEvidence


def mean_luma(bgr: np.ndarray) -> float:
    """Mean BT.601 luma (0-255) of a BGR uint8 image (the detection pass's small frame): the channel
    means (one OpenCV pass, exact sums) weighted."""
    import cv2  # here, not at import: the driver imports this module for its filter

    blue, green, red, _ = cv2.mean(bgr)
    return 0.114 * blue + 0.587 * green + 0.299 * red


class Luma(Measure):
    name = "luma"
    columns = ("mean_luma",)

    def take(self, index: int, frame, image) -> float | None:
        return mean_luma(image) if image is not None else None

    def summarise(self, samples: list, shot: ShotSpan) -> dict:
        kept = [s for s in samples if s is not None]
        return {"mean_luma": float(np.mean(kept)) if kept else None}


@needs(Luma)
def too_dark(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a shot whose sampled frames are darker on average than --min-mean-luma."""
    threshold = config.shots.min_mean_luma
    mean = shot.values.get("mean_luma")
    if threshold <= 0 or mean is None:
        return None
    if mean < threshold:
        return f"darker than --min-mean-luma {threshold:g} (mean luma {mean:.1f} of 255)"
    return None
