"""The conditional task of SFT: which samples keep their earlier scenes as clean context.

The objectives themselves (CogVideoX's v-prediction, Wan's flow matching) belong to the backbone:
`model.objectives`, chosen by `model.families`. Mask²DiT's conditional task keeps earlier scenes
clean (not noised, t=0 modulation) and takes the loss on the last scene only.
"""

from __future__ import annotations

import numpy as np
import torch


def conditional_mask(indices: list[int], num_scenes: int, cond_prob: float, seed: int) -> torch.Tensor:
    """(B, S): for each sample, with probability cond_prob, every scene but the last is clean context.

    Decided per sample index, so the ratio over a run is cond_prob and a resumed run decides the same.
    """
    mask = torch.zeros(len(indices), num_scenes, dtype=torch.bool)
    if num_scenes > 1 and cond_prob > 0:
        for row, index in enumerate(indices):
            if np.random.default_rng([seed, index, 7]).random() < cond_prob:
                mask[row, :-1] = True
    return mask
