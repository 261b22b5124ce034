"""Encoding frames for people and APIs: JPEG stills and short H.264 MP4s (PyAV's bundled libx264).

The one home of the project's encoders: keyframes, Gemini's frames and clips, generated videos.
"""

from __future__ import annotations

import io
import os

import numpy as np

from manifests.files import write_bytes_atomic


def encode_jpeg(image: np.ndarray, quality: int = 85, bgr: bool = False) -> bytes:
    """(H, W, 3) uint8 RGB (or BGR with bgr=True) -> JPEG bytes."""
    import cv2

    ok, encoded = cv2.imencode(
        ".jpg", image if bgr else cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an image of shape {image.shape}")
    return encoded.tobytes()


def encode_mp4(frames: np.ndarray, fps: float, crf: int = 23, preset: str = "medium") -> bytes:
    """(F, H, W, 3) uint8 RGB -> H.264 MP4 bytes, yuv420p (sizes rounded down to even numbers)."""
    import av

    buffer = io.BytesIO()
    height, width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": preset}
        for frame in frames:
            image = np.ascontiguousarray(frame[:height, :width])
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float, crf: int = 18) -> None:
    """encode_mp4 written atomically to `path` (a failed write leaves nothing behind)."""
    write_bytes_atomic(path, encode_mp4(frames, fps, crf=crf))
