"""The diffusion objective, as CogVideoX trains: v-prediction with its DDPM scheduler.

The model predicts v; CogVideoX's trainer turns it into a clean-latent estimate
x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v and weights the MSE to the clean latents by 1 / (1 - a_t),
which is exactly the MSE of v itself. Mask²DiT's conditional task keeps earlier scenes clean
(not noised, t=0 modulation) and takes the loss on the last scene only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model import scene_diffusion_loss


@dataclass
class StepInputs:
    noisy: torch.Tensor  # (B, F, C, h, w): noised target scenes, clean context scenes
    timesteps: torch.Tensor  # (B,)
    clean: torch.Tensor  # (B, S) bool: context scenes
    latents: torch.Tensor  # the clean latents (the loss target)


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


def make_inputs(latents, scene_frames, clean, scheduler, generator) -> StepInputs:
    batch = latents.shape[0]
    steps = scheduler.config.num_train_timesteps
    timesteps = torch.randint(0, steps, (batch,), generator=generator).to(latents.device)
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    frame_clean = clean.to(latents.device).repeat_interleave(torch.tensor(scene_frames, device=latents.device), dim=1)
    noisy = torch.where(frame_clean[:, :, None, None, None], latents, noisy)
    return StepInputs(noisy, timesteps, clean.to(latents.device), latents)


def diffusion_loss(model_output, inputs: StepInputs, scene_frames, scheduler, weighting: str = "cogvideox"):
    """(loss, per-scene MSE (B, S)) of the model's v prediction; context scenes contribute nothing."""
    if weighting == "none":
        target = scheduler.get_velocity(inputs.latents, _noise_from(inputs, scheduler), inputs.timesteps)
        return scene_diffusion_loss(model_output, target, scene_frames, inputs.clean)
    alphas = scheduler.alphas_cumprod.to(model_output.device)[inputs.timesteps]
    predicted_clean = scheduler.get_velocity(model_output, inputs.noisy, inputs.timesteps)  # sqrt(a) x_t - sqrt(1-a) v
    weight = 1.0 / (1.0 - alphas)
    return scene_diffusion_loss(predicted_clean, inputs.latents, scene_frames, inputs.clean, weight=weight)


def _noise_from(inputs: StepInputs, scheduler) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(inputs.noisy.device)[inputs.timesteps].view(-1, 1, 1, 1, 1)
    return (inputs.noisy - alphas.sqrt() * inputs.latents) / (1 - alphas).sqrt()
