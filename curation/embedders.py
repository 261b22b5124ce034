"""The shot embedders (ViCLIP, the paper's; frame-averaged CLIP; a weight-free colour layout) and
what is known about one without loading it: the frames it samples and its identity (name, weights
hash), by which the rows it wrote are found. The embed stage runs them; combine reads their rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation.config import EmbedConfig
from curation.shot_frames import FrameSpec

FIDELITY = {
    "viclip": "ViCLIP video-text embeddings (InternVid): the relevance signal Mask²DiT used",
    "clip": "frame-averaged CLIP image embeddings: semantic, but blind to motion",
    "color": (
        "weight-free colour-layout descriptor (HSV histogram + 4x4 Lab layout, frame-averaged): finds shots "
        "of the same place and lighting, not the same characters; use --embedder viclip for real curation"
    ),
}


class ColorLayoutEmbedder:
    """A deterministic, weight-free shot descriptor for machines without model weights."""

    name, checkpoint_hash = "color-layout", None

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        import cv2

        vectors = []
        for frames in shots:
            per_frame = []
            for frame in frames:
                hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
                hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
                hist = np.sqrt(hist / max(hist.sum(), 1.0))  # Hellinger: cosine behaves like Bhattacharyya
                lab = cv2.cvtColor(cv2.resize(frame, (4, 4), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2LAB)
                layout = (lab.astype(np.float32).ravel() - 128.0) / 128.0
                per_frame.append(np.concatenate([hist, 0.5 * layout]))
            vectors.append(np.mean(per_frame, axis=0))
        matrix = np.asarray(vectors, dtype=np.float32)
        matrix -= matrix.mean(axis=1, keepdims=True)  # centred, so unrelated shots are not all similar
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-8)


class ViCLIPEmbedder:
    def __init__(self, checkpoint: str, device: str):
        from model.viclip import ViCLIP

        self.model = ViCLIP.from_checkpoint(checkpoint).to(device)
        if device == "cuda":
            import torch

            self.model = self.model.to(torch.bfloat16)
        size = "l14" if self.model.config.vision_width == 1024 else f"w{self.model.config.vision_width}"
        self.name, self.checkpoint_hash = f"viclip-{size}", self.model.checkpoint_hash
        # The official demo: its own frame choice, full-size frames resized straight to the model's size.
        config = self.model.config
        self.frame_spec = FrameSpec(count=config.num_frames, rule="viclip", max_side=None, square=config.image_size)

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        from model.viclip import preprocess_frames

        size = self.model.config.image_size
        import torch

        video = torch.stack([preprocess_frames(frames, size) for frames in shots])
        return self.model.video_embeddings(video).numpy()


class ClipEmbedder:
    def __init__(self, checkpoint: str, device: str):
        from model.clip import ClipEncoder

        self.encoder = ClipEncoder.from_pretrained(checkpoint, device=device)
        self.name, self.checkpoint_hash = "clip", self.encoder.checkpoint_hash

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        counts = [len(f) for f in shots]
        per_frame = self.encoder.image_embeddings(np.concatenate(shots)).numpy()
        means = np.stack([chunk.mean(0) for chunk in np.split(per_frame, np.cumsum(counts)[:-1])])
        return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-8)


def make_embedder(config: EmbedConfig, device: str = "cpu"):
    if config.kind == "color":
        return ColorLayoutEmbedder()
    if not config.checkpoint:
        raise ValueError(f"--embedder {config.kind} needs a local checkpoint (--{config.kind}-checkpoint PATH)")
    return (ViCLIPEmbedder if config.kind == "viclip" else ClipEmbedder)(config.checkpoint, device)


def frame_spec_for(config: EmbedConfig) -> FrameSpec:
    """The frames an embedder samples, known without loading it (ViCLIP: its 8 frames at 224x224)."""
    if config.kind == "viclip":
        return FrameSpec(count=8, rule="viclip", max_side=None, square=224)
    return FrameSpec(count=config.frames_per_shot, rule="uniform", max_side=config.decode_max_side)


def expected_identity(config: EmbedConfig) -> tuple[str | None, str | None]:
    """(embedder name or None, checkpoint hash) of the embedder `config` builds, without building it."""
    from pathlib import Path

    from model.weights import file_hash

    if config.kind == "color":
        return ColorLayoutEmbedder.name, None
    path = Path(config.checkpoint)
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        return None, file_hash(weights[0]) if weights else None
    return None, file_hash(path)


def rows_of_this_embedder(embeddings: pd.DataFrame, config: EmbedConfig) -> pd.DataFrame:
    """The shot_embeddings rows the embedder `config` builds wrote, known without loading anything:
    by its weights file's hash, or by the weight-free embedder's name."""
    name, checkpoint_hash = expected_identity(config)
    same = embeddings["checkpoint_hash"].fillna("") == (checkpoint_hash or "")
    if name is not None:
        same &= embeddings["embedder"] == name
    return embeddings[same]
