"""Synthetic H.264 videos with known cut frames: the job's built-in demo input, tests and benchmarks."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass
class SyntheticVideo:
    path: Path
    cuts: list[int]  # first frame of every shot but the first
    num_frames: int
    fps: float


def _shot_frames(index: int, length: int, width: int, height: int, rng: np.random.Generator):
    """A shot: a hue far from its neighbours' (golden-ratio steps), a gradient and a moving box."""
    hue = (index * 0.618034) % 1.0
    # Alternate bright/dark shots too, so even ContentDetector's fixed threshold sees every cut.
    base = np.array(colorsys.hsv_to_rgb(hue, 0.8, 0.95 if index % 2 == 0 else 0.45)) * 255
    other = np.array(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.9, 0.35 + 0.4 * rng.random())) * 255
    ramp = np.linspace(0.6, 1.0, width, dtype=np.float32)[None, :, None]
    background = (base[None, None, :] * ramp).repeat(height, axis=0)
    box = max(8, min(width, height) // 5)
    x0, y0 = rng.integers(0, width - box), rng.integers(0, height - box)
    vx, vy = rng.choice([-3, -2, 2, 3]), rng.choice([-2, -1, 1, 2])
    # Sensor-like noise from a small bank of frames: drawing fresh noise per frame dominates the
    # cost of writing long benchmark videos and changes nothing for the detectors.
    noise = [rng.normal(0, 2.0, size=(height, width, 1)).astype(np.float32) for _ in range(min(length, 7))]
    for t in range(length):
        image = background + noise[t % len(noise)]
        x = int(x0 + vx * t) % (width - box)
        y = int(y0 + vy * t) % (height - box)
        image[y : y + box, x : x + box] = other
        yield np.clip(image, 0, 255).astype(np.uint8)


def write_synthetic_video(
    path: str | Path,
    shot_lengths: list[int],
    fps: float = 24.0,
    size: tuple[int, int] = (320, 240),
    seed: int = 0,
    gop: int | None = None,
    rotation: int = 0,
    frame_times: list[float] | None = None,
    codec: str = "libx264",
    faststart: bool = False,
) -> SyntheticVideo:
    """Encode shots of the given lengths (frames). Cuts are at the cumulative lengths.

    frame_times: per-frame presentation times in seconds, for variable frame rate videos.
    rotation: display rotation (degrees counter-clockwise) stored in the container.
    faststart: put the MP4 index before the data (as web videos do).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    total = sum(shot_lengths)
    if frame_times is not None and len(frame_times) != total:
        raise ValueError("frame_times needs one time per frame")
    rng = np.random.default_rng(seed)
    rate = Fraction(fps).limit_denominator(1001)
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency"} if codec == "libx264" else {}
        if codec == "libx264":
            stream.options["g"] = str(gop or int(round(fps * 2)))
            stream.options["sc_threshold"] = "0"  # keyframes at fixed intervals, not at our cuts
        time_base = Fraction(1, 1000) if frame_times is not None else 1 / rate
        stream.codec_context.time_base = time_base
        if rotation:
            stream.set_display_rotation(rotation)
        frame_index = 0
        for shot, length in enumerate(shot_lengths):
            for image in _shot_frames(shot, length, width, height, rng):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.time_base = time_base
                frame.pts = round(frame_times[frame_index] * 1000) if frame_times is not None else frame_index
                container.mux(stream.encode(frame))
                frame_index += 1
        container.mux(stream.encode(None))
    cuts = list(np.cumsum(shot_lengths[:-1]).tolist())
    return SyntheticVideo(path=path, cuts=cuts, num_frames=total, fps=fps)


def write_sample_videos(folder: str | Path, count: int = 3, seed: int = 0) -> list[SyntheticVideo]:
    """The demo input used when the job is started without --input: a few short multi-shot videos."""
    rng = np.random.default_rng(seed)
    videos = []
    for i in range(count):
        lengths = [int(n) for n in rng.integers(48, 144, size=int(rng.integers(4, 8)))]
        videos.append(write_synthetic_video(Path(folder) / f"sample_{i:02d}.mp4", lengths, seed=seed + i))
    return videos
