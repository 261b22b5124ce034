"""Motion: `motion_mean`, `motion_min_patch`, `motion_source`, and the `static` filter.

Taken from the codec's own motion vectors while the detection pass decodes (FFmpeg exports them
with flags2=+export_mvs, ~5% of a fast decode; summing a frame's vectors costs ~0.07 ms, so every
`STRIDE`th frame is read, 6 a second at 24 fps: enough for a shot's mean): per sampled frame, the mean
vector length weighted by block area over the frame's area, and the same on a 4x4 grid of
patches, in pixels per reference step at the source resolution (a B-frame's reference may lie a
few frames away). Per shot, `motion_mean` is the mean over its
frames that carry vectors, `motion_min_patch` the weakest patch's mean (patches inside the active
picture only, so black bars do not count as still regions): cosmos-curate's two motion scores.

Where the codec exports none (intra-only codecs, some AV1 decoders), the frame differences of the
pass's small detection images take their place: the mean absolute luma change per frame (0-255)
between sampled images, `motion_source` "frame_diff" (and "motion_vectors" otherwise), so a user
knows which scale a threshold applies to. The patch score then stays null.
"""

from __future__ import annotations

import numpy as np

from curation.bars import Bars, turn
from curation.config import CurationConfig
from curation.measures import Measure, ShotSpan, needs
from curation.shot_filters import ShotEvidence

GRID = 4  # patches per side
STRIDE = 4  # motion is read on frames whose number is a multiple of this


def grey(image: np.ndarray) -> np.ndarray:
    import cv2  # here, not at import: the driver imports this module for its filter

    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def vector_motion(frame) -> np.ndarray | None:
    """The GRID*GRID patch sums of block area x vector length (px) of a frame's motion vectors
    (stored orientation, patches on its GRID x GRID grid), or None if the frame carries none (an
    I-frame, a codec that exports none). Only moving vectors are read: still blocks add nothing, and
    a patch's sum is later divided by its pixel area (so an intra block counts as still)."""
    from av.sidedata.sidedata import SideDataContainer

    # Not `frame.side_data`: PyAV caches that container on the frame and the container refers to the
    # frame, a reference cycle that keeps every sampled decoded frame (and its decoder buffer) alive
    # until Python's cycle collector runs, which slowed the decoder by ~15% (docs/benchmarks.md).
    side = SideDataContainer(frame).get("MOTION_VECTORS")
    if side is None:
        return None
    vectors = side.to_ndarray()
    if not len(vectors):
        return None
    moving = vectors[np.flatnonzero(moving_blocks(vectors))]
    if not len(moving):
        return np.zeros(GRID * GRID, np.float32)
    scale = np.maximum(moving["motion_scale"], 1).astype(np.float32)
    weighted = np.hypot(moving["motion_x"] / scale, moving["motion_y"] / scale) * (
        moving["w"].astype(np.float32) * moving["h"]
    )
    column = np.clip(moving["dst_x"].astype(np.int32) * GRID // max(frame.width, 1), 0, GRID - 1)
    row = np.clip(moving["dst_y"].astype(np.int32) * GRID // max(frame.height, 1), 0, GRID - 1)
    return np.bincount(row * GRID + column, weights=weighted, minlength=GRID * GRID).astype(np.float32)


def moving_blocks(vectors: np.ndarray) -> np.ndarray:
    """Nonzero where a block moves. FFmpeg's AVMotionVector has motion_x and motion_y as adjacent
    int32 fields: read as one int64, a block moves where it is nonzero, one pass over the records
    instead of two and an OR (most blocks of most frames are still; ~40% of the read's time)."""
    x, y = vectors.dtype.fields["motion_x"], vectors.dtype.fields["motion_y"]
    if x[0] != np.int32 or y[0] != np.int32 or y[1] != x[1] + 4 or vectors.dtype.itemsize % 8 or x[1] % 8:
        return vectors["motion_x"] | vectors["motion_y"]  # another layout: the plain test
    return vectors.view(np.int64).reshape(len(vectors), -1)[:, x[1] // 8]


class Motion(Measure):
    """Motion vectors on every STRIDEth frame; small-image differences between those frames where the
    pass made images (the fallback)."""

    name = "motion"
    columns = ("motion_mean", "motion_min_patch", "motion_source")
    every_frame = True
    needs_motion_vectors = True

    def __init__(self):
        # The previous sampled small image: its frame, the image, its grey once the fallback needed it.
        self.last: tuple[int, np.ndarray, np.ndarray | None] | None = None

    def take(self, index: int, frame, image) -> tuple[np.ndarray | None, float | None] | None:
        if index % STRIDE:
            return None
        vectors = vector_motion(frame)
        difference = None
        now = None
        if vectors is None and image is not None and self.last is not None:
            # The fallback is read only where a frame carries no vectors (a shot's summary uses it
            # only when none of its frames does): the same numbers as always taking it.
            last_index, last_image, last_grey = self.last
            if last_image.shape == image.shape and index > last_index:
                import cv2  # here, not at import: the driver imports this module for its filter

                now, before = grey(image), last_grey if last_grey is not None else grey(last_image)
                difference = float(cv2.absdiff(now, before).mean()) / (index - last_index)
        if image is not None:
            self.last = (index, image, now)
        if vectors is None and difference is None:
            return None
        return vectors, difference

    def summarise(self, samples: list, shot: ShotSpan) -> dict:
        vectors = [v for v, _ in filter(None, samples) if v is not None]
        if vectors:
            patches = np.stack(vectors).mean(axis=0) / (shot.width * shot.height / (GRID * GRID))
            inside = patches[patches_inside(shot)]
            return {"motion_mean": float(patches.mean()), "motion_source": "motion_vectors",
                    "motion_min_patch": float(inside.min()) if len(inside) else None}  # fmt: skip
        differences = [d for _, d in filter(None, samples) if d is not None]
        if differences:
            return {"motion_mean": float(np.mean(differences)), "motion_min_patch": None,
                    "motion_source": "frame_diff"}  # fmt: skip
        return {"motion_mean": None, "motion_min_patch": None, "motion_source": None}


def patches_inside(shot: ShotSpan) -> np.ndarray:
    """Which of the stored frame's GRID x GRID patches have their centre in the active picture
    (`crop_*`, upright, from the bars measure when it ran first); all of them without one."""
    crop = [shot.columns.get(k) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
    if None in crop or not shot.width or not shot.height:
        return np.ones(GRID * GRID, dtype=bool)

    k = int(round(shot.rotation / 90.0)) % 4
    stored_w, stored_h = (shot.height, shot.width) if k % 2 else (shot.width, shot.height)
    # The crop is upright; the patches are on the stored frame: turn the crop back.
    x, y, w, h = turn(tuple(crop), -shot.rotation, shot.width, shot.height)
    centres = (np.arange(GRID) + 0.5) / GRID
    cx, cy = np.meshgrid(centres * stored_w, centres * stored_h)
    return ((cx >= x) & (cx < x + w) & (cy >= y) & (cy < y + h)).ravel()


@needs(Bars, Motion)  # bars first: the weakest patch is looked for inside the active picture
def static(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a still shot: motion under --min-motion, or a patch under --min-motion-patch."""
    mean, weakest = shot.values.get("motion_mean"), shot.values.get("motion_min_patch")
    source = shot.values.get("motion_source")
    if mean is None:
        return None
    unit = "px/frame, motion vectors" if source == "motion_vectors" else "mean luma change per frame"
    threshold = config.shots.min_motion if source == "motion_vectors" else config.shots.min_frame_change
    if mean < threshold:
        flag = "--min-motion" if source == "motion_vectors" else "--min-frame-change"
        return f"static: motion {mean:.3f} ({unit}) under {flag} {threshold:g}"
    patch = config.shots.min_motion_patch
    if weakest is not None and patch > 0 and weakest < patch:
        return f"static region: its weakest patch moves {weakest:.3f} px/frame, under --min-motion-patch {patch:g}"
    return None
