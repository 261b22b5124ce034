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


def synthetic_shot_frames(index: int, length: int, width: int, height: int, rng: np.random.Generator):
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
            for image in synthetic_shot_frames(shot, length, width, height, rng):
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


@dataclass
class TransitionVideo:
    path: Path
    cuts: list[int]  # ground truth: a hard cut's new first frame, a gradual transition's middle frame
    kinds: list[str]  # the kind of each cut: cut | dissolve | fade
    spans: list[tuple[int, int]]  # each transition's frames [start, end) (a hard cut: (cut, cut))
    flashes: list[int]  # first frames of flashes (2 bright frames inside a shot: never a cut)
    num_frames: int
    fps: float


def write_transition_video(
    path: str | Path,
    shot_lengths: list[int],
    transitions: list[tuple[str, int]],
    flashes: list[int] = (),
    fps: float = 24.0,
    size: tuple[int, int] = (160, 90),
    seed: int = 0,
) -> TransitionVideo:
    """Shots joined by known transitions, for measuring shot detectors against ground truth.

    transitions[i] joins shot i to shot i+1: ("cut", 0), ("dissolve", n) (the last n frames of
    shot i blended into the first n of shot i+1) or ("fade", n) (shot i fades to black over n//2
    frames, shot i+1 fades in from black over the rest). A gradual transition's ground-truth cut is
    its middle frame, span.start + n // 2. `flashes` are frame numbers where two frames turn almost
    white, inside a shot: a detector that fires there has found a cut that is not one.
    """
    if len(transitions) != len(shot_lengths) - 1:
        raise ValueError("one transition between each two shots")
    width, height = size
    rng = np.random.default_rng(seed)
    shots = [list(synthetic_shot_frames(i, n, width, height, rng)) for i, n in enumerate(shot_lengths)]
    frames: list[np.ndarray] = list(shots[0])
    cuts, kinds, spans = [], [], []
    for (kind, n), shot in zip(transitions, shots[1:]):
        shot = list(shot)
        if kind == "cut":
            cuts.append(len(frames))
            spans.append((len(frames), len(frames)))
        elif kind == "dissolve":
            start = len(frames) - n
            for k in range(n):
                alpha = (k + 0.5) / n
                frames[start + k] = ((1 - alpha) * frames[start + k] + alpha * shot[k]).astype(np.uint8)
            shot = shot[n:]
            cuts.append(start + n // 2)
            spans.append((start, start + n))
        elif kind == "fade":
            out, into = n // 2, n - n // 2
            start = len(frames) - out
            for k in range(out):
                frames[start + k] = (frames[start + k] * (1 - (k + 1) / (out + 1))).astype(np.uint8)
            for k in range(into):
                shot[k] = (shot[k] * ((k + 1) / (into + 1))).astype(np.uint8)
            cuts.append(start + n // 2)
            spans.append((start, start + n))
        else:
            raise ValueError(f"unknown transition {kind!r}: cut, dissolve or fade")
        kinds.append(kind)
        frames += shot
    for flash in flashes:
        for f in range(flash, min(flash + 2, len(frames))):
            frames[f] = (0.25 * frames[f] + 0.75 * 255).astype(np.uint8)
    path = write_frames(path, frames, fps, crf=18)
    return TransitionVideo(path, cuts, kinds, spans, list(flashes), len(frames), fps)


@dataclass
class DefectVideo:
    """A video of shots with known defects, joined by hard cuts (the quality signals' ground truth)."""

    path: Path
    kinds: list[str]  # per shot: clean | subtitles | frozen | letterbox | replay | watermark | pillarbox
    cuts: list[int]
    crops: dict[int, tuple[int, int, int, int]]  # shot index -> active picture (x, y, w, h), where bars
    replays: dict[int, int]  # shot index -> the shot it repeats
    num_frames: int
    fps: float
    size: tuple[int, int]


DEFECT_SHOTS = ("clean", "subtitles", "frozen", "letterbox", "replay", "watermark", "pillarbox")


def write_defect_video(
    path: str | Path,
    kinds: tuple[str, ...] = DEFECT_SHOTS,
    shot_frames: int = 72,
    fps: float = 24.0,
    size: tuple[int, int] = (640, 360),
    seed: int = 0,
) -> DefectVideo:
    """Shots of the kinds given, each `shot_frames` long: clean (the moving-box shots of
    `write_synthetic_video`), subtitles (a white line drawn near the bottom), frozen (one frame
    held), letterbox / pillarbox (the picture shrunk between black bars), replay (the frames of the
    first clean shot again), watermark (a small channel name in a corner)."""
    from PIL import Image, ImageDraw, ImageFont

    width, height = size
    rng = np.random.default_rng(seed)
    shots: list[list[np.ndarray]] = []
    crops, replays = {}, {}

    def draw(image: np.ndarray, text: str, font_size: int, xy: tuple[int, int]) -> np.ndarray:
        picture = Image.fromarray(image)
        font = ImageFont.load_default(size=font_size)
        ImageDraw.Draw(picture).text(xy, text, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        return np.asarray(picture)

    for index, kind in enumerate(kinds):
        if kind == "replay":
            original = kinds.index("clean")
            replays[index] = original
            shots.append([frame.copy() for frame in shots[original]])
            continue
        frames = list(synthetic_shot_frames(index, shot_frames, width, height, rng))
        if kind == "subtitles":
            lines = ["Where were you last night?", "I told you, I was at home."]
            frames = [draw(f, lines[(t * 2) // shot_frames], height // 13, (width // 6, height - height // 6))
                      for t, f in enumerate(frames)]  # fmt: skip
        elif kind == "watermark":
            frames = [draw(f, "NEWS 24", height // 20, (width - width // 6, height // 20)) for f in frames]
        elif kind == "frozen":
            frames = [frames[0].copy() for _ in frames]
        elif kind in ("letterbox", "pillarbox"):
            import cv2

            bar = height // 8 if kind == "letterbox" else width // 8
            x, y = (0, bar) if kind == "letterbox" else (bar, 0)
            w, h = width - 2 * x, height - 2 * y
            crops[index] = (x, y, w, h)
            boxed = []
            for f in frames:
                canvas = np.zeros_like(f)
                canvas[y : y + h, x : x + w] = cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)
                boxed.append(canvas)
            frames = boxed
        elif kind != "clean":
            raise ValueError(f"unknown shot kind {kind!r}: one of {', '.join(DEFECT_SHOTS)}")
        shots.append(frames)
    path = write_frames(path, [image for frames in shots for image in frames], fps, crf=20)
    cuts = [shot_frames * i for i in range(1, len(kinds))]
    return DefectVideo(path, list(kinds), cuts, crops, replays, len(kinds) * shot_frames, fps, size)


def write_frames(path: str | Path, frames: list[np.ndarray], fps: float, crf: int) -> Path:
    """RGB frames as an H.264 MP4 (keyframes every 2 s, never placed at cuts by the encoder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(int(round(fps * 2))), "sc_threshold": "0", "crf": str(crf)}
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
