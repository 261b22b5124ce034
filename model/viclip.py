"""ViCLIP (InternVid's video CLIP), with parameter names that load the official checkpoints strictly.

Official layout (`ViClip-InternVid-10M-FLT.pth`, state dict under "model"; the Hugging Face
`OpenGVLab/ViCLIP-L-14-hf` safetensors hold the same keys):
    temp
    vision_encoder.{conv1, class_embedding, positional_embedding, temporal_positional_embedding,
                    ln_pre, transformer.resblocks.N.{attn, ln_1, mlp.c_fc, mlp.c_proj, ln_2}, ln_post, proj}
    text_encoder.{token_embedding, positional_embedding, transformer.resblocks.N..., ln_final, text_projection}

The vision tower is a CLIP ViT whose patch embedding is a (1, p, p) Conv3d and which adds a learned
temporal embedding, then attends jointly over all frames' patches (spatio-temporal attention).
Preprocessing as the official demo: 8 frames, every (n // 8)-th from the first
(`manifests.sampling.viclip_frame_indices`), resized to 224x224 with OpenCV bilinear, scaled to [0, 1] and normalised
with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) (`preprocess_frames`).

    model = ViCLIP.from_checkpoint("ViClip-InternVid-10M-FLT.pth", tokenizer="bpe_simple_vocab_16e6.txt.gz")
    video = model.video_embeddings(preprocess_frames(frames))   # (B, D), L2-normalised
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.weights import CheckpointError, file_hash

MEAN = (0.485, 0.456, 0.406)  # ImageNet's, as ViCLIP's training used; the one copy (model.feature_extractors uses it)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ViCLIPConfig:
    image_size: int = 224
    patch_size: int = 14
    num_frames: int = 8
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    embed_dim: int = 768
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    context_length: int = 32
    vocab_size: int = 49408


VICLIP_L14 = ViCLIPConfig()
VICLIP_B16 = ViCLIPConfig(patch_size=16, vision_width=768, vision_layers=12, vision_heads=12, embed_dim=512,
                          text_width=512, text_layers=12, text_heads=8)  # fmt: skip


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 (the text tower's, as in CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, norm=nn.LayerNorm):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = norm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = norm(width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # x: (L, B, C)
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, norm=nn.LayerNorm):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, norm) for _ in range(layers)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x


class VisionEncoder(nn.Module):
    def __init__(self, c: ViCLIPConfig):
        super().__init__()
        width, p = c.vision_width, c.patch_size
        self.conv1 = nn.Conv3d(3, width, (1, p, p), (1, p, p), bias=False)
        scale = width**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn((c.image_size // p) ** 2 + 1, width))
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, c.num_frames, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, c.vision_layers, c.vision_heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, c.embed_dim))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) -> (B, embed_dim)."""
        x = self.conv1(video)  # (B, C, T, h, w)
        batch, width, frames = x.shape[:3]
        x = x.permute(0, 2, 3, 4, 1).reshape(batch, frames, -1, width)  # (B, T, hw, C)
        x = x + self.positional_embedding[1:].to(x.dtype)
        temporal = self.temporal_positional_embedding
        # A single frame gets the mean temporal embedding, as the official model does.
        temporal = temporal.mean(1, keepdim=True) if frames == 1 else temporal[:, :frames]
        x = x + temporal[:, :, None].to(x.dtype)
        # One class token per video; its spatial position embedding is position 0.
        cls = (self.class_embedding + self.positional_embedding[0]).to(x.dtype).expand(batch, 1, width)
        x = torch.cat([cls, x.permute(0, 2, 1, 3).reshape(batch, -1, width)], dim=1)  # (B, 1 + hw*T, C)
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2))
        return self.ln_post(x[0]) @ self.proj


class TextEncoder(nn.Module):
    def __init__(self, c: ViCLIPConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.positional_embedding = nn.Parameter(torch.randn(c.context_length, c.text_width) * 0.01)
        self.transformer = Transformer(c.text_width, c.text_layers, c.text_heads, norm=FP32LayerNorm)
        self.ln_final = FP32LayerNorm(c.text_width)
        self.text_projection = nn.Parameter(torch.randn(c.text_width, c.embed_dim) * c.text_width**-0.5)
        self.register_buffer(
            "causal_mask", torch.full((c.context_length, c.context_length), float("-inf")).triu(1), persistent=False
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, context_length) with EOT as the largest id -> (B, embed_dim)."""
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2), self.causal_mask.to(x.dtype)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ self.text_projection


class ViCLIP(nn.Module):
    def __init__(self, config: ViCLIPConfig = VICLIP_L14, tokenizer=None):
        super().__init__()
        self.config = config
        self.vision_encoder = VisionEncoder(config)
        self.text_encoder = TextEncoder(config)
        self.temp = nn.Parameter(torch.tensor(1 / 100.0))
        self.tokenizer = tokenizer
        self.checkpoint_hash: str | None = None

    @torch.no_grad()
    def video_embeddings(self, video: torch.Tensor) -> torch.Tensor:
        """Preprocessed video (B, T, 3, H, W) -> L2-normalised embeddings (B, D)."""
        param = self.vision_encoder.proj
        features = self.vision_encoder(video.to(param.device, param.dtype).permute(0, 2, 1, 3, 4))
        return F.normalize(features.float(), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> tuple[torch.Tensor, list[bool]]:
        """L2-normalised text embeddings (B, D) and, per text, whether it was truncated to fit."""
        if self.tokenizer is None:
            raise ValueError(
                "this ViCLIP has no tokenizer; pass tokenizer= (the checkpoint's bpe_simple_vocab_16e6.txt.gz)"
            )
        tokens, truncated = self.tokenizer.encode_batch(texts, self.config.context_length)
        features = self.text_encoder(tokens.to(self.text_encoder.token_embedding.weight.device))
        return F.normalize(features.float(), dim=-1), truncated

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None) -> ViCLIP:
        """Load an official .pth (weights_only) or a safetensors file strictly.

        The architecture comes from the config saved with the file, else (official files) from the
        tensor shapes: ViT-L/14 and ViT-B/16 towers, any context length and vocabulary.
        """
        state, stored_config = load_state_dict(path)
        ours = stored_config and set(stored_config) == set(ViCLIPConfig.__dataclass_fields__)
        config = ViCLIPConfig(**stored_config) if ours else config_from_state_dict(state, path)
        model = cls(config)
        missing, unexpected = _key_mismatch(model, state)
        if missing or unexpected:
            raise CheckpointError(
                f"{path}: not a ViCLIP checkpoint of the official layout: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}); use "
                "ViClip-InternVid-10M-FLT.pth or the ViCLIP-L-14-hf model.safetensors"
            )
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: tensor shapes do not match a ViCLIP: {err}") from err
        if tokenizer is not None:
            from model.clip_tokenizer import ClipBPETokenizer

            model.tokenizer = ClipBPETokenizer(tokenizer)
        model.checkpoint_hash = file_hash(path)
        return model.eval()

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Save in the official layout ({"model": state_dict} in a .pth, or flat safetensors)."""
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if str(path).endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, str(path), metadata={"viclip_config": json.dumps(asdict(self.config))})
        else:
            torch.save({"model": state, "config": asdict(self.config)}, path)


def load_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict | None]:
    """The state dict (official keys) and the config stored with it, if any (official files have none)."""
    path = Path(path)
    stored_config = None
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; pass the local path of the weights file")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file

            state = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                stored_config = json.loads((f.metadata() or {}).get("viclip_config", "null"))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("config"), dict):
                stored_config = state["config"]
    except Exception as err:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict (or one under 'model')")
    return {k.removeprefix("model."): v for k, v in state.items()}, stored_config


def config_from_state_dict(state: dict[str, torch.Tensor], where) -> ViCLIPConfig:
    try:
        conv = state["vision_encoder.conv1.weight"]  # (width, 3, 1, p, p)
        positions = state["vision_encoder.positional_embedding"].shape[0] - 1
        layers = lambda prefix: 1 + max(int(k.split(".")[3]) for k in state if k.startswith(prefix))  # noqa: E731
        text_width = state["text_encoder.token_embedding.weight"].shape[1]
        vision_width = conv.shape[0]
        return ViCLIPConfig(
            image_size=round(positions**0.5) * conv.shape[-1],
            patch_size=conv.shape[-1],
            num_frames=state["vision_encoder.temporal_positional_embedding"].shape[1],
            vision_width=vision_width,
            vision_layers=layers("vision_encoder.transformer.resblocks."),
            vision_heads=vision_width // 64,
            embed_dim=state["vision_encoder.proj"].shape[1],
            text_width=text_width,
            text_layers=layers("text_encoder.transformer.resblocks."),
            text_heads=text_width // 64,
            context_length=state["text_encoder.positional_embedding"].shape[0],
            vocab_size=state["text_encoder.token_embedding.weight"].shape[0],
        )
    except (KeyError, ValueError, IndexError) as err:
        raise CheckpointError(f"{where}: not a ViCLIP checkpoint: key {err} missing or malformed") from err


def _key_mismatch(model: nn.Module, state: dict) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - state.keys()), sorted(state.keys() - expected)


def preprocess_frames(frames: np.ndarray, size: int = 224) -> torch.Tensor:
    """(T, H, W, 3) uint8 RGB -> (T, 3, size, size) float32, as the official demo: OpenCV bilinear
    resize of the uint8 frames (no antialiasing), then (x / 255 - mean) / std in float64."""
    import cv2

    frames = np.asarray(frames)
    resized = np.stack(
        [cv2.resize(np.ascontiguousarray(f), (size, size), interpolation=cv2.INTER_LINEAR) for f in frames]
    )
    video = (resized / 255.0 - np.asarray(MEAN).reshape(1, 1, 1, 3)) / np.asarray(STD).reshape(1, 1, 1, 3)
    return torch.from_numpy(video.transpose(0, 3, 1, 2)).float()
