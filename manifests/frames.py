"""Reading a shot's frames, frame-exact by PTS, from its source video (PyAV)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from manifests.store import is_url, open_input


class VideoReadError(RuntimeError):
    """The source video of a manifest row cannot be opened or decoded as the row says."""


IMAGE_CODECS = {"mjpeg", "png", "bmp", "tiff", "webp", "jpeg2000", "gif", "apng"}  # cover art / still images


def pick_video_stream(container):
    """The stream a video's frames come from, the same for every reader: never an attached picture
    (cover art) or still image; among the rest, moving-picture codecs before image codecs, then the
    default stream, then the most frames, then the longest. None if the file has no video stream."""
    still = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image
    streams = [s for s in container.streams.video if not (int(s.disposition) & int(still))]

    def rank(stream):
        duration = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        return (stream.codec_context.name not in IMAGE_CODECS, bool(int(stream.disposition) & 1),
                stream.frames or 0, duration, -stream.index)  # fmt: skip

    return max(streams, key=rank) if streams else None


@contextmanager
def open_video(path: str | os.PathLike, threads: int = 0, motion_vectors: bool = False):
    """Open `path` and yield (container, video stream) with threaded decoding; with `motion_vectors`
    the decoder exports the codec's motion vectors (frame side data "MOTION_VECTORS").

    threads=0 lets FFmpeg pick; frame threading is what makes H.264/HEVC decode scale on cores.
    `path` may be an object-store URL (s3://...): PyAV then reads through a buffered file object.
    """
    handle = None
    try:
        if is_url(path):
            try:
                handle = open_input(path)
            except Exception as err:  # noqa: BLE001 - the store client's own errors (credentials, endpoint, ...)
                raise VideoReadError(
                    f"{path}: cannot read it from the object store ({type(err).__name__}: {err}); set credentials "
                    "the standard way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role) "
                    "and, for a server other than AWS, AWS_ENDPOINT_URL"
                ) from err
            container = av.open(handle)
        else:
            container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as err:
        if handle is not None:
            handle.close()
        reason = getattr(err, "strerror", None) or str(err)
        raise VideoReadError(f"{path}: cannot open ({reason}): not a video, or truncated or corrupt") from err
    try:
        stream = pick_video_stream(container)
        if stream is None:
            kinds = "only cover art / still pictures" if container.streams.video else "no video stream"
            raise VideoReadError(f"{path} has {kinds}: not a video")
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        if motion_vectors:
            stream.codec_context.options = {"flags2": "+export_mvs"}
        yield container, stream
    finally:
        container.close()
        if handle is not None:
            handle.close()


def int_or(value: Any, default: int | None) -> int | None:
    """An integer column's value, or `default` where it is null: None, NaN, or pandas' <NA> (whose
    comparisons are <NA>, so `value != value` cannot tell)."""
    try:
        return default if value is None or value != value else int(value)
    except TypeError:  # bool(<NA>)
        return default


def iter_frames(container, stream, start_pts: int | None = None, end_pts: int | None = None) -> Iterator[av.VideoFrame]:
    """Decoded frames with start_pts <= pts < end_pts, in presentation order.

    Seeks to the keyframe at or before start_pts. If the demuxer lands after the target (broken
    index), it falls back to decoding from the beginning so no frame is silently skipped.
    """
    first_pts = stream.start_time or 0
    seeked = start_pts is not None and start_pts > first_pts
    if seeked:
        container.seek(int(start_pts), stream=stream, backward=True, any_frame=False)
    checked = not seeked
    for frame in container.decode(stream):
        pts = frame.pts
        if pts is None:  # raw elementary streams (.h264, .hevc) carry no timestamps: decode order is all
            if start_pts is None and end_pts is None:
                yield frame
            continue
        if not checked:
            checked = True
            if pts > start_pts:
                container.seek(first_pts, stream=stream, backward=True, any_frame=False)
                yield from iter_frames(container, stream, None, end_pts)
                return
        if start_pts is not None and pts < start_pts:
            continue
        if end_pts is not None and pts >= end_pts:
            return
        yield frame


def video_frames(path: str | os.PathLike, threads: int = 0) -> Iterator[av.VideoFrame]:
    """Every frame of a file's video stream (the one pick_video_stream chooses), in presentation order."""
    with open_video(path, threads=threads) as (container, stream):
        yield from iter_frames(container, stream)


def upright(image: np.ndarray, rotation: int) -> np.ndarray:
    """Rotate a decoded (H, W, C) frame to display orientation.

    `rotation` is the display matrix angle in degrees counter-clockwise (PyAV's frame.rotation).
    """
    k = (int(round(rotation / 90.0))) % 4
    return np.ascontiguousarray(np.rot90(image, k)) if k else image


_RGB = threading.local()  # a reused swscale context per thread: creating one costs more than converting
_FORKED_AWAY: list = []  # contexts inherited through fork(): kept, never freed (see to_rgb)


def to_rgb(frame: av.VideoFrame, rotation: int, max_side: int | None = None) -> np.ndarray:
    """Convert a frame to an upright RGB array, downscaled (aspect kept) so its long side <= max_side.
    The same pixels as frame.to_ndarray(width=, height=, format="rgb24"), without a new context per call."""
    width, height = frame.width, frame.height
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(2, round(width * scale)), max(2, round(height * scale))
    reformatter = getattr(_RGB, "reformatter", None)
    if reformatter is None or _RGB.pid != os.getpid():
        # In a forked child (a data-loader worker) the parent's context is unusable: its swscale
        # threads did not survive the fork, and using or even freeing it waits for them forever. So
        # it is set aside, never freed, and the child makes its own.
        if reformatter is not None:
            _FORKED_AWAY.append(reformatter)
        reformatter, _RGB.pid = VideoReformatter(), os.getpid()
        _RGB.reformatter = reformatter
    image = reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()
    return upright(image, rotation)


def active_picture(image: np.ndarray, shot: Mapping[str, Any]) -> np.ndarray:
    """The part of an upright frame of `shot` (at any scale) inside its black bars: the crop_x/y/w/h
    columns, in source pixels, scaled to the image; the image itself where the row has none."""
    box = [int_or(shot.get(k), None) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
    width, height = int_or(shot.get("width"), None), int_or(shot.get("height"), None)
    if None in box or not width or not height or box[2] <= 0 or box[3] <= 0:
        return image
    x, y, w, h = box
    if (x, y, w, h) == (0, 0, width, height):
        return image
    sx, sy = image.shape[1] / width, image.shape[0] / height
    left, top = round(x * sx), round(y * sy)
    right, bottom = max(left + 1, round((x + w) * sx)), max(top + 1, round((y + h) * sy))
    return np.ascontiguousarray(image[top:bottom, left:right])


def read_shot_frames(
    shot: Mapping[str, Any],
    indices: Sequence[int] | None = None,
    max_side: int | None = None,
    threads: int = 0,
    crop: bool = False,
) -> np.ndarray:
    """Frames of one shot row (from shots.parquet) as a uint8 array (T, H, W, 3), RGB, upright.

    indices: frame offsets within the shot (0 = the shot's first frame); default: every frame.
    crop: only the shot's active picture inside black bars (its crop_* columns, when it has them);
    max_side then applies to the whole frame, as if the bars were still there.
    """
    num_frames = int(shot["num_frames"])
    wanted = range(num_frames) if indices is None else list(indices)
    if any(i < 0 or i >= num_frames for i in wanted):
        raise ValueError(f"frame indices must lie in [0, {num_frames}) for shot {shot.get('shot_id')}")
    wanted_set = set(wanted)
    rotation = int_or(shot.get("rotation"), 0)
    frames: dict[int, np.ndarray] = {}
    start_pts, end_pts = int_or(shot.get("start_pts"), None), int_or(shot.get("end_pts"), None)
    # Without timestamps (raw streams) a shot is found by counting frames from the file's start.
    skip = int_or(shot.get("start_frame"), 0) if start_pts is None else 0
    with open_video(shot["source_path"], threads=threads) as (container, stream):
        last = max(wanted_set) if wanted_set else -1
        for position, frame in enumerate(iter_frames(container, stream, start_pts, end_pts)):
            offset = position - skip
            if offset < 0:
                continue
            if offset in wanted_set:
                image = to_rgb(frame, rotation, max_side)
                frames[offset] = active_picture(image, shot) if crop else image
            if offset >= last:
                break
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise VideoReadError(
            f"{shot['source_path']}: shot {shot.get('shot_id')} has {num_frames} frames in the manifest but "
            f"frames {missing[:5]} could not be decoded; the file changed or is truncated, re-run curation"
        )
    return np.stack([frames[i] for i in wanted]) if wanted else np.zeros((0, 0, 0, 3), np.uint8)
