"""A shot filter of its own: mostly black shots (fades held, night footage without detail) teach a
generator little. `--min-mean-luma` sets the threshold (0, the default, keeps every shot).

The measurement is taken in the detection pass: the mean luma of the small frames it samples for
keyframes (`ShotEvidence.luma`); the rule is one entry of `SHOT_FILTERS` in curation/run.py.
"""

from __future__ import annotations

import numpy as np

from curation.config import CurationConfig
from curation.shot_filters import ShotEvidence


def mean_luma(bgr: np.ndarray) -> float:
    """Mean BT.601 luma (0-255) of a BGR uint8 image (the detection pass's small frame)."""
    weights = np.array([0.114, 0.587, 0.299], dtype=np.float32)
    return float(bgr.reshape(-1, 3).astype(np.float32).mean(axis=0) @ weights)


def too_dark(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a shot whose sampled frames are darker on average than --min-mean-luma."""
    threshold = config.shots.min_mean_luma
    if threshold <= 0 or not shot.luma:
        return None
    mean = float(np.mean(shot.luma))
    if mean < threshold:
        return f"darker than --min-mean-luma {threshold:g} (mean luma {mean:.1f} of 255)"
    return None
