"""Tests of `manifests/media.py`: JPEG stills and short H.264 MP4s, decoded back."""

from __future__ import annotations

import av
import cv2
import numpy as np

from manifests.media import encode_jpeg, encode_mp4, write_mp4


def _frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    frames = np.zeros((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t, :, :, 0] = 40 + 6 * t  # red grows frame by frame
        frames[t, :, : width // 2, 2] = 200  # the left half is blue too
    return frames


def test_a_jpeg_decodes_to_the_image_in_rgb_or_from_bgr():
    image = _frames(1)[0]
    back = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode_jpeg(image), np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert back.shape == image.shape and np.abs(back.astype(int) - image).mean() < 3
    from_bgr = cv2.imdecode(np.frombuffer(encode_jpeg(image[..., ::-1].copy(), bgr=True), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(from_bgr[..., ::-1].astype(int) - image).mean() < 3


def test_an_mp4_holds_every_frame_at_even_size_and_its_rate(tmp_path):
    frames = _frames(12, height=49, width=65)  # odd sizes are rounded down for yuv420p
    path = tmp_path / "clip.mp4"
    write_mp4(path, frames, fps=8)
    assert path.read_bytes()[4:8] == b"ftyp" and encode_mp4(frames, 8)[4:8] == b"ftyp"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 8.0
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 12 and decoded[0].shape == (48, 64, 3)
    red = [float(f[..., 0].mean()) for f in decoded]
    assert red == sorted(red) and abs(red[-1] - red[0] - 66) < 6  # frame order and colour survive
    assert list(tmp_path.iterdir()) == [path]  # written atomically: no temporary file is left
