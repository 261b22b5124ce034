"""Validation during training: the configured prompts generated as one multi-scene video, scored.

The `Validator` is built once per run. It reuses the trainer's text encoder and VAE when the trainer
encodes online (precomputed runs load them here, once), builds the backbone's pipeline around the
live transformer,
and loads CLIP once when `validation.clip` is set.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from manifests.media import write_mp4
from model.clip import ClipEncoder
from model.metrics import scene_embedding, semantic_consistency, visual_consistency
from training.config import TrainConfig, transformer_weights


class Validator:
    def __init__(self, config: TrainConfig, family, transformer, encoders, device, dtype):
        self.config = config
        self.pipe = family.pipeline(config.model.path, transformer, encoders, device, dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.text_length = family.text_length(config.model.path, transformer_weights(config))  # as training
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
                           guidance_scale=config.validation.guidance_scale, seed=config.run.seed,
                           max_sequence_length=self.text_length)  # fmt: skip
        transformer.train(was_training)
        folder = config.run.output / "validation" / f"step_{step:07d}"
        folder.mkdir(parents=True, exist_ok=True)
        write_mp4(folder / "video.mp4", np.concatenate([v[0] for v in result.videos]), config.data.target_fps, crf=18)
        if self.clip is None:
            return {}
        scenes = [scene_embedding(self.clip.image_embeddings(video[0])) for video in result.videos]
        visual = visual_consistency(scenes)
        semantic = float(np.mean(semantic_consistency(scenes, self.clip.text_embeddings(config.validation.prompts))))
        scores = {"visual_consistency_clip": visual, "semantic_consistency": semantic,
                  "sequence_consistency": (visual + semantic) / 2}  # fmt: skip
        (folder / "metrics.json").write_text(json.dumps(scores, indent=2))
        return scores
