"""From a data-loader batch to model inputs: latents and caption embeddings, encoded or precomputed."""

from __future__ import annotations

import numpy as np
import torch

from training.config import TrainConfig
from training.encoding import Encoders, LatentStore, scene_key, stable_seed, text_key


class BatchEncoder:
    """latents (B, S*F, C, h, w) and text (B, S*L, D) for a batch; applies caption dropout."""

    def __init__(self, config: TrainConfig, encoders: Encoders | None, store: LatentStore | None, identity: str):
        self.config, self.encoders, self.store, self.identity = config, encoders, store, identity

    def dropped(self, index: int, scene: int) -> bool:
        rng = np.random.default_rng([self.config.run.seed, index, scene, 3])
        return rng.random() < self.config.data.caption_dropout

    def __call__(self, batch: dict, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        captions = [["" if self.dropped(i, s) else c for s, c in enumerate(caps)]
                    for i, caps in zip(batch["index"], batch["captions"])]  # fmt: skip
        flat = [c for caps in captions for c in caps]
        batch_size, scenes = len(captions), len(captions[0])
        if self.store is not None:
            latents = torch.stack([self.store.get(scene_key(k, self.config.data, self.identity))
                                   for keys in batch["keys"] for k in keys])  # fmt: skip
            text = torch.stack([self.store.get(text_key(c, self.identity)) for c in flat])
        else:
            frames = batch["frames"].flatten(0, 1)  # (B*S, T, H, W, 3)
            seed = stable_seed(self.config.run.seed, *batch["index"])
            latents = self.encoders.encode_frames(frames, seed)
            text = self.encoders.encode_text(flat)
        latents = latents.to(device, dtype).reshape(batch_size, scenes * latents.shape[1], *latents.shape[2:])
        text = text.to(device, dtype).reshape(batch_size, scenes * text.shape[1], text.shape[2])
        return latents, text
