"""From a data-loader batch to model inputs: latents and caption embeddings, encoded or precomputed."""

from __future__ import annotations

import numpy as np
import torch

from training.config import TrainConfig
from training.latent_store import LatentStore, scene_key, stable_seed, text_key


class BatchEncoder:
    """latents (B, S*F, C, h, w) and text (B, S*L, D) for a batch; applies caption dropout."""

    def __init__(self, config: TrainConfig, encoders, store: LatentStore | None, identity: str):
        self.config, self.encoders, self.store, self.identity = config, encoders, store, identity

    def dropped(self, index: int, scene: int) -> bool:
        rng = np.random.default_rng([self.config.run.seed, index, scene, 3])
        return rng.random() < self.config.data.caption_dropout

    def __call__(self, batch: dict, device, dtype) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(latents (B, sum F_s, C, h, w), text (B, S*L, D), latent frames per scene F_s)."""
        captions = [["" if self.dropped(i, s) else c for s, c in enumerate(caps)]
                    for i, caps in zip(batch["index"], batch["captions"])]  # fmt: skip
        flat = [c for caps in captions for c in caps]
        batch_size, scenes = len(captions), len(captions[0])
        if self.store is not None:
            per_scene = [[self.store.get(scene_key(k, self.config.data, self.identity)) for k in keys]
                         for keys in batch["keys"]]  # fmt: skip
            latents = torch.stack([torch.cat(sample) for sample in per_scene])
            scene_frames = [x.shape[0] for x in per_scene[0]]
            text = torch.stack([self.store.get(text_key(c, self.identity)) for c in flat])
        else:
            frames = batch["frames"]  # per scene (B, T_s, H, W, 3)
            seed = stable_seed(self.config.run.seed, *batch["index"])
            if len({f.shape[1] for f in frames}) == 1:  # one length: every scene of the batch in one VAE call
                encoded = self.encoders.encode_frames(torch.stack(frames, 1).flatten(0, 1), seed)
                encoded = encoded.reshape(batch_size, scenes, *encoded.shape[1:])
                parts = list(encoded.unbind(1))
            else:
                parts = [self.encoders.encode_frames(f, stable_seed(seed, s)) for s, f in enumerate(frames)]
            latents = torch.cat(parts, dim=1)
            scene_frames = [p.shape[1] for p in parts]
            text = self.encoders.encode_text(flat)
        latents = latents.to(device, dtype)
        text = text.to(device, dtype).reshape(batch_size, scenes * text.shape[1], text.shape[2])
        return latents, text, scene_frames
