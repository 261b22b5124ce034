"""Multi-scene generation with Mask²DiT on CogVideoX: N prompts in one pass, and auto-regressive scene expansion.

    pipe = Mask2DiTPipeline.from_pretrained("CogVideoX-5b-mask2dit", dtype=torch.bfloat16)
    out = pipe(["Actor1 (a tall man in a grey coat) walks ...", "...", "..."], seed=42)
    more = pipe.expand(out, ["Actor1 (...) opens the door ..."], seed=42)   # 1 new scene

Thin on purpose (as diffusers pipelines are): encode prompts -> prepare latents -> denoise ->
decode. Everything but the scene logic comes from diffusers' `CogVideoXPipeline`; what every
backbone's pipeline shares (the output, negatives per scene, expansion) is `model.multiscene`. Expansion keeps
every scene's latents, so context scenes are never decoded and re-encoded between steps.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline, retrieve_timesteps

from model.cogvideox import Mask2DiTTransformer3DModel
from model.multiscene import MultiSceneOutput, expand_story, scene_negatives
from model.weights import ModelFolderError, checked_folder  # noqa: F401  (raised here; callers catch it from either module)

REQUIRED_COMPONENTS = ("tokenizer", "text_encoder", "vae", "transformer", "scheduler")


def check_model_folder(path: str | os.PathLike) -> Path:
    return checked_folder(path, "CogVideoX-layout model", ("model_index.json", *REQUIRED_COMPONENTS),
                          "It needs model_index.json and the folders tokenizer/, text_encoder/, vae/, transformer/, "
                          "scheduler/ (as in a CogVideoX-5b download, with a Mask²DiT transformer/ exported by training)")  # fmt: skip


class Mask2DiTPipeline(CogVideoXPipeline):
    """CogVideoX's pipeline with a `Mask2DiTTransformer3DModel`: joint multi-scene denoising."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        path = check_model_folder(pretrained_model_name_or_path)
        if "transformer" not in kwargs:
            kwargs["transformer"] = Mask2DiTTransformer3DModel.from_pretrained(
                path, subfolder="transformer", dtype=kwargs.get("dtype", kwargs.get("torch_dtype"))
            )
        return super().from_pretrained(path, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Save in the stock CogVideoX layout: model_index.json names diffusers' classes, so the
        folder also opens in stock tools (single-scene), and `from_pretrained` here re-types the
        transformer as Mask²DiT (its config carries the extra keys)."""
        super().save_pretrained(save_directory, **kwargs)
        index_path = Path(save_directory) / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = CogVideoXPipeline.__name__
        index["transformer"] = ["diffusers", "CogVideoXTransformer3DModel"]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True))

    # --- pieces --------------------------------------------------------------------------------

    def latent_frames(self, num_frames: int) -> int:
        frames = (num_frames - 1) // self.vae_scale_factor_temporal + 1
        p_t = self.transformer.config.patch_size_t or 1
        return frames + (-frames) % p_t

    def encode_scenes(self, prompts: list[str], negative_prompts: list[str] | None, guidance: bool, device, dtype,
                      max_sequence_length: int = 226):  # fmt: skip
        """(B=1 positive, negative) text embeddings with the scenes concatenated: (1, S*226, D)."""
        positive, negative = self.encode_prompt(
            prompts, negative_prompts if guidance else None, guidance, device=device, dtype=dtype,
            max_sequence_length=max_sequence_length,
        )  # fmt: skip
        joined = positive.reshape(1, -1, positive.shape[-1])
        return joined, (negative.reshape(1, -1, negative.shape[-1]) if guidance else None)

    def scene_noise(self, seed: int, frames: int, height: int, width: int, device, dtype) -> torch.Tensor:
        """Initial noise of one scene from its own seed, so a scene is the same however it is batched."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        shape = (1, frames, self.transformer.config.in_channels, height // self.vae_scale_factor_spatial,
                 width // self.vae_scale_factor_spatial)  # fmt: skip
        noise = torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)
        return noise * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def decode_scenes(self, latents: torch.Tensor, scene_frames: list[int]) -> list[np.ndarray]:
        videos = []
        for scene in latents.split(scene_frames, dim=1):
            frames = self.decode_latents(scene)  # (B, C, F, H, W) in [-1, 1]
            frames = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            videos.append(frames.permute(0, 2, 3, 4, 1).cpu().numpy())
        return videos

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, seed: int = 0) -> torch.Tensor:
        """Encode (F, H, W, 3) uint8 frames (F = 4k+1) into clean-context latents (1, k+1, C, h, w).

        As the official expansion pipeline: a VAE posterior sample, scaled, then the scheduler's
        `add_noise` at t=0 (a touch of noise, as training saw clean scenes); both draws are seeded.
        """
        device = self._execution_device
        video = torch.from_numpy(frames).to(device=device, dtype=self.vae.dtype).permute(3, 0, 1, 2)[None]
        video = video / 127.5 - 1.0  # (1, 3, F, H, W)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        sample = self.vae.encode(video).latent_dist.sample(generator=generator)
        latents = (sample * self.vae_scaling_factor_image).permute(0, 2, 1, 3, 4)
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents)
        return self.scheduler.add_noise(latents, noise, torch.zeros(1, dtype=torch.long, device=device))

    # --- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        negative_prompts: list[str] | str | None = None,
        height: int = 480,
        width: int = 720,
        num_frames: int = 49,
        num_inference_steps: int = 50,
        guidance_scale: float = 6.0,
        use_dynamic_cfg: bool = False,
        seed: int = 0,
        eta: float = 0.0,
        context: MultiSceneOutput | None = None,
        output_type: str = "np",
        latents: torch.Tensor | None = None,
        max_sequence_length: int = 226,
    ) -> MultiSceneOutput:
        """Generate one scene per prompt, jointly. With `context`, its scenes are clean context.

        Scene k (counted over context and new scenes) starts from noise seeded with `seed + k`.
        negative_prompts: one string for every scene, context scenes included (the official
            unconditional branch), or one per new scene; context scenes then keep the negatives they
            were generated with (`context.negative_prompts`), else the first new scene's.
        output_type: "np" decodes every scene (context included) to uint8 frames; "latent" skips the VAE.
        latents: the new scenes' initial noise (1, frames per scene * scenes, C, h, w) instead of the
            per-scene seeds, scaled by the scheduler's init_noise_sigma as diffusers pipelines do.
        max_sequence_length: T5 tokens per scene (the transformer's max_text_seq_length, 226 for CogVideoX).
        """
        if not prompts:
            raise ValueError("give at least one prompt")
        device = self._execution_device
        dtype = self.transformer.dtype
        guidance = guidance_scale > 1.0
        context_prompts = context.prompts if context else []
        all_prompts = context_prompts + list(prompts)
        all_negative = scene_negatives(negative_prompts, len(prompts), context)
        text, negative_text = self.encode_scenes(
            all_prompts, all_negative, guidance, device, dtype, max_sequence_length
        )

        frames = self.latent_frames(num_frames)
        new_frames = [frames] * len(prompts)
        first_new = len(context_prompts)
        seeds = list(context.seeds) if context else []
        seeds += [seed + first_new + i for i in range(len(prompts))]
        if latents is None:
            latents = torch.cat(
                [self.scene_noise(s, frames, height, width, device, dtype) for s in seeds[first_new:]], 1
            )
        else:
            expected = (1, frames * len(prompts), self.transformer.config.in_channels,
                        height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial)  # fmt: skip
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, this call needs {expected}")
            latents = latents.to(device=device, dtype=dtype) * self.scheduler.init_noise_sigma
        context_latents = context.latents.to(device=device, dtype=dtype) if context else latents[:, :0]
        scene_frames = (context.scene_frames if context else []) + new_frames
        clean = list(range(first_new))

        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device)
        extra_step_kwargs = self.prepare_extra_step_kwargs(None, eta)
        height_latent, width_latent = latents.shape[-2:]
        rope = self.transformer.prepare_rotary_emb(scene_frames, height_latent, width_latent, device=device)
        text_in = torch.cat([negative_text, text]) if guidance else text
        old_pred_original_sample = None
        with self.progress_bar(total=num_inference_steps) as progress:
            for i, t in enumerate(timesteps):
                model_input = torch.cat([context_latents, self.scheduler.scale_model_input(latents, t)], dim=1)
                model_input = torch.cat([model_input] * 2) if guidance else model_input
                prediction = self.transformer(
                    hidden_states=model_input, encoder_hidden_states=text_in, timestep=t.expand(model_input.shape[0]),
                    image_rotary_emb=rope, scene_frames=scene_frames, clean_scenes=clean or None, return_dict=False,
                )[0].float()[:, context_latents.shape[1]:]  # fmt: skip
                if guidance:
                    scale = guidance_scale
                    if use_dynamic_cfg:
                        scale = 1 + guidance_scale * (
                            (1 - math.cos(math.pi * ((num_inference_steps - t.item()) / num_inference_steps) ** 5.0))
                            / 2
                        )
                    uncond, cond = prediction.chunk(2)
                    prediction = uncond + scale * (cond - uncond)
                if isinstance(self.scheduler, CogVideoXDPMScheduler):
                    previous = timesteps[i - 1] if i > 0 else None
                    latents, old_pred_original_sample = self.scheduler.step(
                        prediction, old_pred_original_sample, t, previous, latents, **extra_step_kwargs,
                        return_dict=False,
                    )  # fmt: skip
                else:
                    latents = self.scheduler.step(prediction, t, latents, **extra_step_kwargs, return_dict=False)[0]
                latents = latents.to(dtype)
                progress.update()

        all_latents = torch.cat([context_latents, latents], dim=1)
        output = MultiSceneOutput(all_latents, scene_frames, all_prompts, seeds, negative_prompts=all_negative)
        if output_type == "np":
            output.videos = self.decode_scenes(all_latents, scene_frames)
        self.maybe_free_model_hooks()
        return output

    def expand(
        self, previous: MultiSceneOutput, prompts: list[str], context_scenes: int = 2, seed: int = 0, **kwargs
    ) -> MultiSceneOutput:
        """Add one scene per prompt, each conditioned on (up to) the last `context_scenes` scenes.

        The loop works on latents only: context scenes are never decoded or re-encoded. Scene k of
        the story starts from noise seeded `seed + k`, so expanding by two equals expanding twice by one.
        """
        return expand_story(self, previous, prompts, context_scenes, seed, **kwargs)
