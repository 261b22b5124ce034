"""Validation during training: the configured prompts generated as one multi-scene video, scored.

The `Validator` is built once per run. It reuses the trainer's T5 and VAE when the trainer encodes
online (precomputed runs load them here, once), builds the pipeline around the live transformer,
and loads CLIP once when `validation.clip` is set.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
from transformers import T5EncoderModel, T5Tokenizer

from model.clip import ClipEncoder
from model.generate import write_mp4
from model.pipeline import Mask2DiTPipeline
from training.config import TrainConfig
from training.encoding import Encoders
from training.evaluate import scene_embedding, semantic_consistency, visual_consistency


class Validator:
    def __init__(self, config: TrainConfig, transformer, encoders: Encoders | None, device, dtype):
        self.config = config
        path = config.model.path
        if encoders is not None:
            tokenizer, text_encoder, vae = encoders.tokenizer, encoders.text_encoder, encoders.vae
        else:
            tokenizer = T5Tokenizer.from_pretrained(path, subfolder="tokenizer")
            text_encoder = T5EncoderModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype).to(device)
            vae = AutoencoderKLCogVideoX.from_pretrained(path, subfolder="vae", dtype=dtype).to(device)
        scheduler = CogVideoXDDIMScheduler.from_pretrained(path, subfolder="scheduler")
        self.pipe = Mask2DiTPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
        self.pipe.set_progress_bar_config(disable=True)
        self.clip = ClipEncoder.from_pretrained(config.validation.clip) if config.validation.clip else None

    @torch.no_grad()
    def __call__(self, step: int) -> dict[str, float]:
        """Generate the validation prompts as one multi-scene video; with validation.clip, score it."""
        config = self.config
        if not config.validation.prompts:
            return {}
        transformer = self.pipe.transformer
        was_training = transformer.training
        transformer.eval()
        result = self.pipe(config.validation.prompts, height=config.data.height, width=config.data.width,
                           num_frames=config.data.num_frames, num_inference_steps=config.validation.steps,
                           guidance_scale=config.validation.guidance_scale, seed=config.run.seed)  # fmt: skip
        transformer.train(was_training)
        folder = config.run.output / "validation" / f"step_{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_mp4(folder / "video.mp4", np.concatenate([v[0] for v in result.videos]), config.data.target_fps)
        if self.clip is None:
            return {}
        scenes = [scene_embedding(self.clip.image_embeddings(video[0])) for video in result.videos]
        visual = visual_consistency(scenes)
        semantic = float(np.mean(semantic_consistency(scenes, self.clip.text_embeddings(config.validation.prompts))))
        scores = {"visual_consistency_clip": visual, "semantic_consistency": semantic,
                  "sequence_consistency": (visual + semantic) / 2}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(scores, indent=2))
        return scores
