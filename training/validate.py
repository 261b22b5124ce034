"""Periodic validation samples during training: the configured prompts, generated as one multi-scene video."""

from __future__ import annotations

import numpy as np
import torch

from training.config import TrainConfig


@torch.no_grad()
def validation_samples(transformer, config: TrainConfig, step: int, device, dtype) -> dict[str, float]:
    """Generate the validation prompts as one multi-scene video; with validation.clip, score it."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
    from transformers import T5EncoderModel, T5Tokenizer

    from model.generate import write_mp4
    from model.pipeline import Mask2DiTPipeline

    if not config.validation.prompts:
        return {}
    path = config.model.path
    pipe = Mask2DiTPipeline(
        T5Tokenizer.from_pretrained(path, subfolder="tokenizer"),
        T5EncoderModel.from_pretrained(path, subfolder="text_encoder", dtype=dtype),
        AutoencoderKLCogVideoX.from_pretrained(path, subfolder="vae", dtype=dtype),
        transformer,
        CogVideoXDDIMScheduler.from_pretrained(path, subfolder="scheduler"),
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    was_training = transformer.training
    transformer.eval()
    result = pipe(config.validation.prompts, height=config.data.height, width=config.data.width,
                  num_frames=config.data.num_frames, num_inference_steps=config.validation.steps,
                  guidance_scale=config.validation.guidance_scale, seed=config.run.seed)  # fmt: skip
    transformer.train(was_training)
    folder = config.run.output / "validation" / f"step_{step:07d}"
    folder.mkdir(parents=True, exist_ok=True)
    write_mp4(folder / "video.mp4", np.concatenate([v[0] for v in result.videos]), config.data.target_fps)
    if config.validation.clip is None:
        return {}
    import json

    from model.clip import ClipEncoder
    from training.evaluate import scene_embedding, semantic_consistency, visual_consistency

    clip = ClipEncoder.from_pretrained(config.validation.clip)
    scenes = [scene_embedding(clip.image_embeddings(video[0])) for video in result.videos]
    visual = visual_consistency(scenes)
    semantic = float(np.mean(semantic_consistency(scenes, clip.text_embeddings(config.validation.prompts))))
    scores = {
        "visual_consistency_clip": visual,
        "semantic_consistency": semantic,
        "sequence_consistency": (visual + semantic) / 2,
    }
    (folder / "metrics.json").write_text(json.dumps(scores, indent=2))
    return scores
