"""Multi-scene generation on Wan2.1/Wan2.2 with Mask²DiT: N prompts in one pass, and scene expansion.

    pipe = Mask2DiTWanPipeline.from_pretrained("Wan2.1-T2V-1.3B-mask2dit", dtype=torch.bfloat16)
    out = pipe(["Actor1 (a tall man in a grey coat) walks ...", "...", "..."], seed=42)
    more = pipe.expand(out, ["Actor1 (...) opens the door ..."], seed=42)

Thin on purpose, on diffusers' `WanPipeline`: each scene's prompt is encoded and padded exactly as
Wan encodes one prompt (umT5, `max_sequence_length` tokens, zeros after the prompt), the folder's
own scheduler steps (flow matching / UniPC as Wan ships it), classifier-free guidance uses Wan's
negative prompt, and a Wan2.2-A14B folder switches from `transformer` (high noise) to
`transformer_2` (low noise) at `boundary_ratio`. Context scenes are clean latents (t=0 tokens)
that are never decoded and re-encoded between expansion steps. `MultiSceneOutput.latents` are
(B, F, C, h, w) for every backbone (Wan computes in (B, C, F, h, w)).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from diffusers.pipelines.wan.pipeline_wan import WanPipeline

from model.multiscene import MultiSceneOutput, scene_negatives
from model.wan import Mask2DiTWanTransformer3DModel
from model.weights import checked_folder

# Wan's own default negative prompt (its sample_neg_prompt), used when none is given.
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，"
    "残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，"
    "三条腿，背景人很多，倒着走"
)
WAN_COMPONENTS = ("tokenizer", "text_encoder", "vae", "scheduler")


def check_wan_folder(path: str | os.PathLike) -> Path:
    return checked_folder(path, "Wan diffusers-layout", ("model_index.json", *WAN_COMPONENTS, ("transformer", "transformer_2")),
                          "It needs model_index.json and tokenizer/, text_encoder/, vae/, scheduler/, transformer/ (and "
                          "transformer_2/ for Wan2.2-A14B), as in a Wan2.1/Wan2.2 '-Diffusers' download")  # fmt: skip


class Mask2DiTWanPipeline(WanPipeline):
    """WanPipeline with `Mask2DiTWanTransformer3DModel`(s): joint multi-scene denoising."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        path = check_wan_folder(pretrained_model_name_or_path)
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        for name in ("transformer", "transformer_2"):
            if name not in kwargs and (path / name).is_dir():
                kwargs[name] = Mask2DiTWanTransformer3DModel.from_pretrained(path, subfolder=name, dtype=dtype)
        return super().from_pretrained(path, **kwargs)

    def save_pretrained(self, save_directory, **kwargs):
        """Save in the stock Wan layout: model_index.json names diffusers' classes, so the folder also
        opens in stock tools (single-scene); `from_pretrained` here re-types the transformers."""
        super().save_pretrained(save_directory, **kwargs)
        index_path = Path(save_directory) / "model_index.json"
        index = json.loads(index_path.read_text())
        index["_class_name"] = WanPipeline.__name__
        for name in ("transformer", "transformer_2"):
            if index.get(name) and index[name][0] is not None:
                index[name] = ["diffusers", "WanTransformer3DModel"]
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True))

    # --- pieces --------------------------------------------------------------------------------

    @property
    def denoisers(self) -> list:
        return [m for m in (self.transformer, self.transformer_2) if m is not None]

    def latent_frames(self, num_frames: int) -> int:
        return (num_frames - 1) // self.vae_scale_factor_temporal + 1

    def encode_scenes(self, prompts, negative_prompts, guidance: bool, device, dtype, max_sequence_length: int):
        """(1, S*L, D) positive and negative text: every scene encoded and padded as Wan pads one prompt."""
        positive = self._get_t5_prompt_embeds(prompts, 1, max_sequence_length, device, dtype)
        joined = positive.reshape(1, -1, positive.shape[-1])
        if not guidance:
            return joined, None
        negative = self._get_t5_prompt_embeds(negative_prompts, 1, max_sequence_length, device, dtype)
        return joined, negative.reshape(1, -1, negative.shape[-1])

    def _latent_stats(self, device, dtype):
        shape = (1, self.vae.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.vae.config.latents_mean).view(shape).to(device, dtype)
        std = torch.tensor(self.vae.config.latents_std).view(shape).to(device, dtype)
        return mean, std

    def scene_noise(self, seed: int, frames: int, height: int, width: int, device, dtype) -> torch.Tensor:
        """Initial noise (1, C, F, h, w) of one scene from its own seed."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        shape = (1, self.denoisers[0].config.in_channels, frames, height // self.vae_scale_factor_spatial,
                 width // self.vae_scale_factor_spatial)  # fmt: skip
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)

    @torch.no_grad()
    def decode_scenes(self, latents: torch.Tensor, scene_frames: list[int]) -> list[np.ndarray]:
        """(B, F, C, h, w) latents -> per scene (B, F', H, W, 3) uint8."""
        videos = []
        mean, std = self._latent_stats(latents.device, self.vae.dtype)
        for scene in latents.split(scene_frames, dim=1):
            z = scene.permute(0, 2, 1, 3, 4).to(self.vae.dtype) * std + mean
            frames = self.vae.decode(z, return_dict=False)[0]  # (B, 3, F', H, W) in [-1, 1]
            frames = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            videos.append(frames.permute(0, 2, 3, 4, 1).cpu().numpy())
        return videos

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray, seed: int = 0) -> torch.Tensor:
        """(F, H, W, 3) uint8 (F = 4k+1) -> clean-context latents (1, k+1, C, h, w): a seeded VAE
        posterior sample, normalised with the VAE's latent mean and std as Wan trains."""
        device = self._execution_device
        video = torch.from_numpy(frames).to(device=device, dtype=self.vae.dtype).permute(3, 0, 1, 2)[None]
        generator = torch.Generator(device="cpu").manual_seed(seed)
        posterior = self.vae.encode(video / 127.5 - 1.0).latent_dist
        noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32).to(posterior.mean)
        mean, std = self._latent_stats(device, posterior.mean.dtype)
        latents = (posterior.mean + posterior.std * noise - mean) / std
        return latents.permute(0, 2, 1, 3, 4)

    # --- generation ----------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompts: list[str],
        negative_prompts: list[str] | str | None = None,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        guidance_scale_2: float | None = None,
        seed: int = 0,
        context: MultiSceneOutput | None = None,
        output_type: str = "np",
        latents: torch.Tensor | None = None,
        max_sequence_length: int = 512,
        **_ignored,
    ) -> MultiSceneOutput:
        """Generate one scene per prompt, jointly; with `context`, its scenes are clean context.

        Scene k (over context and new scenes) starts from noise seeded `seed + k`. negative_prompts:
        as `Mask2DiTPipeline` takes them; None means Wan's own negative prompt for every scene.
        guidance_scale_2: the low-noise expert's guidance (Wan2.2-A14B); default guidance_scale.
        latents: the new scenes' initial noise (1, F_total, C, h, w) instead of the per-scene seeds.
        """
        if not prompts:
            raise ValueError("give at least one prompt")
        device = self._execution_device
        model = self.denoisers[0]
        dtype = model.dtype
        guidance = guidance_scale > 1.0
        context_prompts = context.prompts if context else []
        all_prompts = context_prompts + list(prompts)
        negatives = scene_negatives(WAN_NEGATIVE_PROMPT if negative_prompts is None else negative_prompts,
                                    len(prompts), context)  # fmt: skip
        text, negative_text = self.encode_scenes(all_prompts, negatives, guidance, device, dtype, max_sequence_length)

        frames = self.latent_frames(num_frames)
        first_new = len(context_prompts)
        seeds = (list(context.seeds) if context else []) + [seed + first_new + i for i in range(len(prompts))]
        if latents is None:
            latents = torch.cat(
                [self.scene_noise(s, frames, height, width, device, dtype) for s in seeds[first_new:]], 2
            )
        else:
            expected = (1, frames * len(prompts), model.config.in_channels,
                        height // self.vae_scale_factor_spatial, width // self.vae_scale_factor_spatial)  # fmt: skip
            if tuple(latents.shape) != expected:
                raise ValueError(f"latents have shape {tuple(latents.shape)}, this call needs {expected}")
            latents = latents.to(device=device, dtype=dtype).permute(0, 2, 1, 3, 4)
        context_latents = (context.latents.to(device=device, dtype=dtype).permute(0, 2, 1, 3, 4) if context
                           else latents[:, :, :0])  # fmt: skip
        scene_frames = (context.scene_frames if context else []) + [frames] * len(prompts)
        clean = list(range(first_new)) or None
        text_in = torch.cat([negative_text, text]) if guidance else text
        scene_text = [max_sequence_length] * len(all_prompts)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        boundary = (self.config.boundary_ratio * self.scheduler.config.num_train_timesteps
                    if self.config.boundary_ratio is not None and self.transformer_2 is not None else None)  # fmt: skip
        with self.progress_bar(total=len(self.scheduler.timesteps)) as progress:
            for t in self.scheduler.timesteps:
                low_noise = boundary is not None and t < boundary
                current = self.transformer_2 if low_noise else (self.transformer or self.transformer_2)
                scale = (guidance_scale_2 if guidance_scale_2 is not None else guidance_scale) if low_noise \
                    else guidance_scale  # fmt: skip
                model_input = torch.cat([context_latents, latents], dim=2).to(current.dtype)
                model_input = torch.cat([model_input] * 2) if guidance else model_input
                prediction = current(
                    hidden_states=model_input, timestep=t.expand(model_input.shape[0]), encoder_hidden_states=text_in,
                    scene_frames=scene_frames, scene_text=scene_text, clean_scenes=clean, return_dict=False,
                )[0].float()[:, :, context_latents.shape[2]:]  # fmt: skip
                if guidance:
                    uncond, cond = prediction.chunk(2)
                    prediction = uncond + scale * (cond - uncond)
                latents = self.scheduler.step(prediction, t, latents.float(), return_dict=False)[0].to(dtype)
                progress.update()

        all_latents = torch.cat([context_latents, latents], dim=2).permute(0, 2, 1, 3, 4)
        output = MultiSceneOutput(all_latents, scene_frames, all_prompts, seeds, negative_prompts=negatives)
        if output_type == "np":
            output.videos = self.decode_scenes(all_latents, scene_frames)
        self.maybe_free_model_hooks()
        return output

    def expand(self, previous: MultiSceneOutput, prompts: list[str], context_scenes: int = 2, seed: int = 0,
               **kwargs) -> MultiSceneOutput:  # fmt: skip
        """Add one scene per prompt, each conditioned on (up to) the last `context_scenes` scenes.
        Works on latents only; expanding by two equals expanding twice by one."""
        from model.multiscene import expand_story

        return expand_story(self, previous, prompts, context_scenes, seed, **kwargs)
