"""Training objectives of the backbones, with Mask²DiT's clean context scenes.

- `VPrediction` (CogVideoX): DDPM noising, the model predicts v; CogVideoX's trainer turns it into
  a clean-latent estimate x0 = sqrt(a_t) x_t - sqrt(1 - a_t) v and weights the MSE to the clean
  latents by 1 / (1 - a_t), which is exactly the MSE of v itself.
- `FlowMatching` (Wan2.1/2.2): x_t = (1 - s) x0 + s noise with s drawn uniformly and shifted as Wan
  samples (s' = shift s / (1 + (shift - 1) s)), timestep 1000 s', target velocity noise - x0. A
  Wan2.2-A14B expert trains on its own part of the timesteps (`timestep_range`).

Both keep clean context scenes un-noised (their tokens get t=0 in the model) and take no loss on them.
Latents are (B, F, C, h, w) with scenes concatenated on F.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from model.layout import clean_mask


@dataclass
class StepInputs:
    noisy: torch.Tensor  # (B, F, C, h, w): noised target scenes, clean context scenes
    timesteps: torch.Tensor  # (B,) model timesteps
    clean: torch.Tensor  # (B, S) bool: context scenes
    latents: torch.Tensor  # the clean latents
    target: torch.Tensor | None = None  # what the model should predict, when it is not derived from the above


def scene_diffusion_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    scene_frames: Sequence[int],
    clean_scenes: torch.Tensor | Sequence[int] | None = None,
    weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MSE over the frames of the scenes being generated; clean context scenes contribute nothing.

    prediction/target: (B, F, C, H, W) with scenes concatenated on F. weight: optional per-sample
    loss weight (B,) (e.g. CogVideoX's 1 / (1 - alpha_bar_t)). Returns (loss, per-scene MSE (B, S));
    the loss is the mean squared error over all elements of non-clean scenes, weighted per sample.
    """
    batch_size = prediction.shape[0]
    num_scenes = len(scene_frames)
    error = (prediction.float() - target.float()) ** 2
    per_scene = torch.stack([chunk.mean(dim=(1, 2, 3, 4)) for chunk in error.split(list(scene_frames), dim=1)], dim=1)
    clean = clean_mask(clean_scenes, batch_size, num_scenes, prediction.device)
    active = torch.ones_like(per_scene) if clean is None else (~clean).to(per_scene.dtype)
    sizes = torch.tensor(scene_frames, dtype=per_scene.dtype, device=per_scene.device)
    scene_weight = active * sizes  # every generated element counts once
    if weight is not None:
        scene_weight = scene_weight * weight.to(per_scene.dtype)[:, None]
    denominator = (active * sizes).sum().clamp_min(1.0)
    return (per_scene * scene_weight).sum() / denominator, per_scene


def _keep_clean(latents, noisy, clean, scene_frames):
    frame_clean = clean.to(latents.device).repeat_interleave(torch.tensor(scene_frames, device=latents.device), dim=1)
    return torch.where(frame_clean[:, :, None, None, None], latents, noisy)


class VPrediction:
    """CogVideoX's objective with its DDPM scheduler (`scheduler/` of the model folder)."""

    def __init__(self, scheduler, weighting: str = "cogvideox"):
        if weighting not in ("cogvideox", "none"):
            raise ValueError(f"v-prediction weighting must be 'cogvideox' or 'none', got {weighting!r}")
        self.scheduler, self.weighting = scheduler, weighting

    def make_inputs(self, latents, scene_frames, clean, generator) -> StepInputs:
        batch = latents.shape[0]
        steps = self.scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (batch,), generator=generator).to(latents.device)
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
        noisy = self.scheduler.add_noise(latents, noise, timesteps)
        return StepInputs(
            _keep_clean(latents, noisy, clean, scene_frames), timesteps, clean.to(latents.device), latents
        )

    def loss(self, model_output, inputs: StepInputs, scene_frames):
        """(loss, per-scene MSE (B, S)) of the model's v prediction; context scenes contribute nothing."""
        scheduler = self.scheduler
        if self.weighting == "none":
            target = scheduler.get_velocity(inputs.latents, self._noise_from(inputs), inputs.timesteps)
            return scene_diffusion_loss(model_output, target, scene_frames, inputs.clean)
        alphas = scheduler.alphas_cumprod.to(model_output.device)[inputs.timesteps]
        predicted_clean = scheduler.get_velocity(
            model_output, inputs.noisy, inputs.timesteps
        )  # sqrt(a) x_t - sqrt(1-a) v
        weight = 1.0 / (1.0 - alphas)
        return scene_diffusion_loss(predicted_clean, inputs.latents, scene_frames, inputs.clean, weight=weight)

    def _noise_from(self, inputs: StepInputs) -> torch.Tensor:
        alphas = self.scheduler.alphas_cumprod.to(inputs.noisy.device)[inputs.timesteps].view(-1, 1, 1, 1, 1)
        return (inputs.noisy - alphas.sqrt() * inputs.latents) / (1 - alphas).sqrt()


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift of a noise level in [0, 1]."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def unshift_sigma(shifted: float, shift: float) -> float:
    return shifted / (shift - (shift - 1) * shifted)


class FlowMatching:
    """Wan's rectified-flow objective. timestep_range: the model timesteps [low, high) this model
    trains on (an A14B expert's share: high noise [boundary, 1000], low noise [0, boundary))."""

    def __init__(self, shift: float = 5.0, num_train_timesteps: int = 1000,
                 timestep_range: tuple[float, float] | None = None):  # fmt: skip
        if shift <= 0:
            raise ValueError(f"flow shift must be positive, got {shift}")
        self.shift, self.num_train_timesteps = float(shift), int(num_train_timesteps)
        low, high = timestep_range or (0.0, float(num_train_timesteps))
        if not 0 <= low < high <= num_train_timesteps:
            raise ValueError(f"timestep range {timestep_range} must lie in [0, {num_train_timesteps}]")
        # Uniform draws u in [u_low, u_high) give shifted noise levels in [low, high) / 1000.
        self.u_range = (
            unshift_sigma(low / num_train_timesteps, shift),
            unshift_sigma(high / num_train_timesteps, shift),
        )

    def make_inputs(self, latents, scene_frames, clean, generator) -> StepInputs:
        batch = latents.shape[0]
        low, high = self.u_range
        u = low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
        sigma = shift_sigma(u, self.shift).float().to(latents.device)
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
        s = sigma.view(-1, 1, 1, 1, 1).to(latents.dtype)
        noisy = (1 - s) * latents + s * noise
        target = noise - latents
        return StepInputs(_keep_clean(latents, noisy, clean, scene_frames), sigma * self.num_train_timesteps,
                          clean.to(latents.device), latents, target)  # fmt: skip

    def loss(self, model_output, inputs: StepInputs, scene_frames):
        """(loss, per-scene MSE (B, S)) of the predicted velocity; context scenes contribute nothing."""
        return scene_diffusion_loss(model_output, inputs.target, scene_frames, inputs.clean)
