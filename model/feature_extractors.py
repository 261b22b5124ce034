"""Frozen backbones the metrics use: DINO-style image features and I3D video features (for FVD).

Both load from local files only:
    dino = DinoEncoder.from_pretrained("/models/dinov2-base")      # a Hugging Face DINO/DINOv2 folder
    i3d = I3DFeatures.load("/models/i3d_torchscript.pt")           # TorchScript, as FVD tooling ships it
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.viclip import MEAN as IMAGENET_MEAN
from model.viclip import STD as IMAGENET_STD


def resize_center_crop(frames: np.ndarray, size: int, mean, std) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, size, size): short side to size (bicubic), centre crop, normalise."""
    images = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    resized = (max(size, round(h * scale)), max(size, round(w * scale)))
    images = F.interpolate(images, size=resized, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    images = images[:, :, top : top + size, left : left + size]
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


class DinoEncoder:
    """CLS features of a DINO/DINOv2 ViT (any transformers AutoModel folder whose output has a CLS token)."""

    def __init__(self, model, image_size: int = 224):
        self.model, self.image_size = model.eval(), image_size

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str = "cpu") -> DinoEncoder:
        from transformers import AutoModel

        from model.weights import CheckpointError

        if not (Path(path) / "config.json").is_file():
            raise CheckpointError(f"{path}: not a local DINO folder (needs config.json and weights from transformers)")
        model = AutoModel.from_pretrained(path).to(device)
        return cls(model, getattr(model.config, "image_size", 224))

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray, batch_size: int = 32) -> torch.Tensor:
        device = next(self.model.parameters()).device
        outputs = []
        for start in range(0, len(frames), batch_size):
            pixels = resize_center_crop(
                frames[start : start + batch_size], self.image_size, IMAGENET_MEAN, IMAGENET_STD
            )
            hidden = self.model(pixel_values=pixels.to(device)).last_hidden_state[:, 0]  # the CLS token
            outputs.append(F.normalize(hidden.float(), dim=-1).cpu())
        return torch.cat(outputs)


class I3DFeatures:
    """Video features for FVD from a local I3D.

    A TorchScript file (the detector FVD implementations ship, e.g. StyleGAN-V's i3d_torchscript.pt)
    is called with (B, 3, T, 224, 224) frames in [-1, 1] and asked for its features; a plain
    state-dict file needs the module it belongs to (`module=`) and is loaded with weights_only.
    """

    def __init__(self, network, takes_feature_flags: bool):
        self.network, self.takes_feature_flags = network.eval(), takes_feature_flags

    @classmethod
    def load(cls, path: str | os.PathLike, module: torch.nn.Module | None = None, device: str = "cpu") -> I3DFeatures:
        from model.weights import CheckpointError

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: I3D file not found; pass a local TorchScript or state-dict file")
        try:
            network = torch.jit.load(str(path), map_location=device)
            flags = "return_features" in str(network.forward.schema) if hasattr(network.forward, "schema") else False
            return cls(network, flags)
        except RuntimeError:
            if module is None:
                raise CheckpointError(
                    f"{path}: not TorchScript; a state dict needs the I3D module to load into"
                ) from None
        state = torch.load(path, map_location=device, weights_only=True)
        try:
            module.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: state dict does not match the I3D module: {err}") from err
        return cls(module.to(device), False)

    @torch.no_grad()
    def features(self, videos: np.ndarray, size: int = 224, crop: bool = True) -> np.ndarray:
        """(N, T, H, W, 3) uint8 -> (N, D) float64 features (the I3D logits of the FVD tooling's model).

        crop=True (StyleGAN-V's protocol): the short side is resized to `size`, then centre-cropped;
        crop=False: every frame is resized to size x size (the aspect ratio is not kept)."""
        out = []
        device = next(iter(self.network.parameters()), torch.zeros(())).device
        for video in videos:
            frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float()
            if crop:
                h, w = frames.shape[-2:]
                scale = size / min(h, w)
                resized = (max(size, round(h * scale)), max(size, round(w * scale)))
                frames = F.interpolate(frames, size=resized, mode="bilinear", align_corners=False, antialias=True)
                top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
                frames = frames[:, :, top : top + size, left : left + size]
            else:
                frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            clip = (frames / 127.5 - 1.0).permute(1, 0, 2, 3)[None].to(device)  # (1, 3, T, size, size)
            if self.takes_feature_flags:
                feature = self.network(clip, rescale=False, resize=False, return_features=True)
            else:
                feature = self.network(clip)
            out.append(feature.reshape(1, -1).double().cpu())
        return torch.cat(out).numpy()
