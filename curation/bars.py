"""Black bars (letterbox, pillarbox, windowbox): each shot's active picture, `crop_x/y/w/h`.

Measured at the keyframe samples of the detection pass, on the luma plane at source resolution
(no conversion: the mean of each row and column of the decoded Y plane, one OpenCV reduction each).
A row or column belongs to a bar when its mean stays at or below --bar-luma in every sample of the
shot; the active picture is what lies between the bars, in pixels of the upright picture at source
resolution (so a crop is exact to the pixel where the encoder kept the bar's edge sharp).

Not a filter by itself: the frame readers (training, caption media, the inspect page's previews)
crop to the active picture, and a shot whose active picture is smaller than --min-picture-fraction
of the frame is flagged (reason "active picture ...").
"""

from __future__ import annotations

import numpy as np

from curation.config import CurationConfig
from curation.measures import Measure, ShotSpan, needs
from curation.shot_filters import ShotEvidence

# 8-bit formats whose first plane is luma at full resolution.
_LUMA_FIRST = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray",
               "yuv440p", "yuvj440p", "yuv411p", "yuv410p"}  # fmt: skip


def luma_plane(frame) -> np.ndarray:
    """The decoded frame's luma as an (H, W) uint8 array: a view of the Y plane for 8-bit YUV,
    a conversion for anything else (10-bit, RGB)."""
    if frame.format.name in _LUMA_FIRST:
        plane = frame.planes[0]
        rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        return rows[: frame.height, : frame.width]
    return frame.to_ndarray(format="gray")


def profiles(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean of each row, mean of each column over every 4th row: a bar is the same all the way
    down), rounded to uint8."""
    import cv2  # here, not at import: the driver imports this module for its filter

    rows = cv2.reduce(luma, 1, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
    cols = cv2.reduce(luma[::4], 0, cv2.REDUCE_AVG, dtype=cv2.CV_32F).ravel()
    return np.rint(rows).astype(np.uint8), np.rint(cols).astype(np.uint8)


def active_span(profile: np.ndarray, black: float) -> tuple[int, int]:
    """[first, last + 1) of the entries above `black`; the whole span when none is."""
    bright = np.flatnonzero(profile > black)
    if not len(bright):
        return 0, len(profile)
    return int(bright[0]), int(bright[-1]) + 1


def turn(rect: tuple[int, int, int, int], rotation: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A rectangle (x, y, w, h) of the stored frame (width x height) in the upright picture, as
    `manifests.frames.upright` turns the frame (np.rot90 by rotation / 90)."""
    x, y, w, h = rect
    k = int(round(rotation / 90.0)) % 4
    if k == 1:  # new[i, j] = old[j, W - 1 - i]
        return y, width - x - w, h, w
    if k == 2:
        return width - x - w, height - y - h, w, h
    if k == 3:  # new[i, j] = old[H - 1 - j, i]
        return height - y - h, x, h, w
    return rect


class Bars(Measure):
    """Row and column luma profiles at the keyframe samples -> the shot's active picture."""

    name = "bars"
    columns = ("crop_x", "crop_y", "crop_w", "crop_h")
    black = 24.0  # set from --bar-luma by `configured`

    @classmethod
    def for_config(cls, config: CurationConfig) -> Bars:
        bars = cls()
        bars.black = config.shots.bar_luma
        return bars

    def take(self, index: int, frame, image) -> tuple[np.ndarray, np.ndarray]:
        return profiles(luma_plane(frame))

    def summarise(self, samples: list, shot: ShotSpan) -> dict:
        if not samples:
            return {"crop_x": 0, "crop_y": 0, "crop_w": shot.width, "crop_h": shot.height}
        rows = np.max(np.stack([s[0] for s in samples]), axis=0)
        cols = np.max(np.stack([s[1] for s in samples]), axis=0)
        (y0, y1), (x0, x1) = active_span(rows, self.black), active_span(cols, self.black)
        x, y, w, h = turn((x0, y0, x1 - x0, y1 - y0), shot.rotation, len(cols), len(rows))
        return {"crop_x": x, "crop_y": y, "crop_w": w, "crop_h": h}


@needs(Bars)
def picture_too_small(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a shot whose active picture is under --min-picture-fraction of the frame."""
    w, h = shot.values.get("crop_w"), shot.values.get("crop_h")
    threshold = config.shots.min_picture_fraction
    if not w or not h or not shot.width or threshold <= 0:
        return None
    fraction = w * h / (shot.width * shot.height)
    if fraction < threshold:
        return f"active picture {w}x{h} is {fraction:.0%} of the frame (--min-picture-fraction {threshold:g})"
    return None
