"""Repeated shots within a video: `duplicate_of` (the shot_id of the earliest copy), and the
`duplicate` filter. Relevance mining prefers them (two copies of a shot are the most similar pair
there is), so a replay left in would make "multi-shot" samples of one shot shown twice.

The signature is measured in the detection pass at the keyframe samples: each sample's small
detection image as a 64x36 grey thumbnail, zero-mean and unit-norm (a flat frame, black or one
colour, has none: it says nothing about content). Shot B repeats an earlier shot A when, for most
of B's samples, some sample of A has a cosine of at least --duplicate-similarity (0.99): measured in
tests/curation/test_duplicates.py, a copy re-encoded at another quality or size scores 0.997, the
same background with the action elsewhere (a camera set-up the edit returns to) 0.976, and a
different shot 0.64; so the default sits between a replay and a return to the same set-up. The pass's signatures are independent of the embedder, so the check is
the same with the weight-free colour embedder and with ViCLIP; combine keeps its own embedding
guard (--duplicate-threshold) as a second line.

Corpus-wide duplicates (across videos) are `python -m curation.dedup`.
"""

from __future__ import annotations

import numpy as np

from curation.config import CurationConfig
from curation.measures import Measure, ShotSpan, needs
from curation.shot_filters import ShotEvidence

SIZE = (64, 36)  # thumbnail width, height
MIN_CONTRAST = 2.0  # luma standard deviation under which a thumbnail is flat (no signature)
SHARE = 0.8  # the fraction of a shot's samples that must match an earlier shot's
BLOCK = 1 << 25  # cosines computed in one product at most (128 MB of float32)


def signature(image: np.ndarray) -> np.ndarray | None:
    """A small BGR image -> its unit-norm zero-mean grey thumbnail (float16), or None if flat."""
    import cv2  # here, not at import: the driver imports this module for its filter

    grey = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), SIZE, interpolation=cv2.INTER_AREA)
    values = grey.astype(np.float32).ravel()
    values -= values.mean()
    norm = float(np.linalg.norm(values))
    if norm < MIN_CONTRAST * np.sqrt(values.size):
        return None
    return (values / norm).astype(np.float16)


class Signature(Measure):
    name = "signature"

    def take(self, index: int, frame, image) -> np.ndarray | None:
        return signature(image) if image is not None else None

    def summarise(self, samples: list, shot: ShotSpan) -> dict:
        kept = [s for s in samples if s is not None]
        return {"signatures": np.stack(kept).astype(np.float32) if kept else None}


def share_scores(cosines: np.ndarray, starts) -> np.ndarray:
    """One shot's samples' cosines (rows) with earlier shots' samples (columns, each earlier shot's
    from its entry of `starts` on) -> per earlier shot, the SHARE-quantile of the rows' best cosine."""
    best = np.maximum.reduceat(cosines, starts, axis=1)  # each row's best per earlier shot
    return np.quantile(best, 1.0 - SHARE, axis=0)


def similarity(later: np.ndarray, earlier: np.ndarray) -> float:
    """The share-quantile of `later`'s samples' best cosine against `earlier`'s samples."""
    return float(share_scores(later @ earlier.T, [0])[0])


def find_duplicates(signatures: list[np.ndarray | None], threshold: float) -> list[tuple[int, float] | None]:
    """For each shot (in time order), (index of the earliest shot it repeats, similarity) or None.
    A copy of a copy points at the first one.

    `similarity` against every earlier shot at once: the samples' cosines come from a few large
    matrix products, the best per earlier shot from one reduction (a loop over pairs of shots took
    0.5 s for 130 shots and grew with their square)."""
    found: list[tuple[int, float] | None] = [None] * len(signatures)
    shots = [i for i, s in enumerate(signatures) if s is not None]
    if len(shots) < 2:
        return found
    stacked = np.concatenate([np.asarray(signatures[i], np.float32) for i in shots])
    starts = np.cumsum([0] + [len(signatures[i]) for i in shots])
    position = 1
    while position < len(shots):
        # The cosines of a run of shots' samples with every sample up to them, in one product of at
        # most BLOCK entries (or one shot's rows): a few large products are faster than many small ones.
        last = position + 1
        while last < len(shots) and (starts[last + 1] - starts[position]) * starts[last + 1] <= BLOCK:
            last += 1
        block = stacked[starts[position] : starts[last]] @ stacked[: starts[last]].T
        for shot in range(position, last):
            cosines = block[starts[shot] - starts[position] : starts[shot + 1] - starts[position], : starts[shot]]
            scores = share_scores(cosines, starts[:shot])
            for earlier in np.flatnonzero(scores >= threshold):
                if found[shots[earlier]] is None:  # a copy of a copy points at the first
                    found[shots[shot]] = (shots[earlier], float(scores[earlier]))
                    break
        position = last
    return found


@needs(Signature)
def duplicate(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a repeat of an earlier shot of the video."""
    original = shot.values.get("duplicate_of")
    if original is None:
        return None
    score = shot.values.get("duplicate_similarity", 1.0)
    return (f"duplicate of {original} (similarity {score:.3f} >= --duplicate-similarity "
            f"{config.shots.duplicate_similarity:g})")  # fmt: skip
