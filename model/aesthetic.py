"""LAION's aesthetic predictor (improved-aesthetic-predictor, "sac+logos+ava1-l14-linearMSE"): an
MLP over L2-normalised CLIP ViT-L/14 image embeddings that scores how good a picture looks, 1-10.

    scorer = AestheticScorer.load("sac+logos+ava1-l14-linearMSE.pth", "/models/clip-vit-large-patch14")
    scores = scorer.score(frames)   # (N, H, W, 3) uint8 RGB -> (N,) float

The checkpoint is the published state dict as it is: `layers.{0,2,4,6,7}.{weight,bias}` of
Linear(768, 1024), Dropout, Linear(1024, 128), Dropout, Linear(128, 64), Dropout, Linear(64, 16),
Linear(16, 1) (a .pth read with weights_only=True, or the same keys in .safetensors). The input
width is read from the checkpoint and must equal the CLIP folder's projection size.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.weights import CheckpointError, file_hash

LAYERS = (0, 2, 4, 6, 7)  # the Linear layers' positions in the published nn.Sequential


class AestheticMLP(nn.Module):
    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The predictor's state dict from .safetensors or a .pth/.pt (weights only, never pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such aesthetic predictor checkpoint")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise CheckpointError(f"{path}: not a readable aesthetic predictor checkpoint ({err})") from err
    return state.get("state_dict", state) if isinstance(state, dict) else state


def load_mlp(path: str | os.PathLike) -> AestheticMLP:
    state = read_state(path)
    expected = {f"layers.{i}.{p}" for i in LAYERS for p in ("weight", "bias")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise CheckpointError(f"{path}: not LAION's aesthetic predictor layout (missing {missing[:3]}, "
                              f"unexpected {extra[:3]})")  # fmt: skip
    mlp = AestheticMLP(int(state["layers.0.weight"].shape[1]))
    try:
        mlp.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise CheckpointError(f"{path}: layer shapes differ from the aesthetic predictor's ({err})") from err
    return mlp.eval()


class AestheticScorer:
    """The MLP on the CLIP image embeddings of frames."""

    def __init__(self, mlp: AestheticMLP, clip, checkpoint_hash: str):
        self.mlp, self.clip, self.checkpoint_hash = mlp, clip, checkpoint_hash

    @classmethod
    def load(cls, checkpoint: str | os.PathLike, clip_folder: str | os.PathLike, device: str = "cpu"):
        from model.clip import ClipEncoder

        mlp = load_mlp(checkpoint)
        clip = ClipEncoder.from_pretrained(clip_folder, device=device)
        width = clip.model.config.projection_dim
        if mlp.layers[0].in_features != width:
            raise CheckpointError(f"{checkpoint} scores {mlp.layers[0].in_features}-wide CLIP embeddings, but "
                                  f"{clip_folder} makes {width}-wide ones: LAION's predictor needs CLIP ViT-L/14")  # fmt: skip
        return cls(mlp.to(device), clip, file_hash(checkpoint))

    @torch.no_grad()
    def score(self, frames: np.ndarray) -> np.ndarray:
        embeddings = self.clip.image_embeddings(frames).to(self.clip.device)
        return self.mlp(embeddings).squeeze(-1).float().cpu().numpy()
