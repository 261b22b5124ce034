"""What every multi-scene pipeline shares (CogVideoX's `model.cogvideox_pipeline`, Wan's
`model.wan_pipeline`): the output a generation returns, the negative prompt of each scene, and
auto-regressive expansion on latents."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class MultiSceneOutput:
    """What a generation returns; `latents` and `prompts` are all that expansion needs."""

    latents: torch.Tensor  # (B, sum(scene_frames), C, h, w), scaled as the transformer sees them
    scene_frames: list[int]  # latent frames per scene
    prompts: list[str]
    seeds: list[int]  # seed of each scene's initial noise
    videos: list[np.ndarray] = field(default_factory=list)  # per scene (B, F, H, W, 3) uint8, when decoded
    negative_prompts: list[str] | None = None  # per scene, as generated; None when unknown (context videos)


def scene_negatives(negative: list[str] | str | None, new_scenes: int, context: MultiSceneOutput | None) -> list[str]:
    """The negative prompt of every scene (context first) for the unconditional branch."""
    context_scenes = len(context.prompts) if context else 0
    if negative is None or isinstance(negative, str):
        return [negative or ""] * (context_scenes + new_scenes)
    negative = list(negative)
    if len(negative) == context_scenes + new_scenes:
        return negative
    if len(negative) != new_scenes:
        raise ValueError(f"{len(negative)} negative prompts for {new_scenes} new scenes (and {context_scenes} context "
                         "scenes): give one string, one per new scene, or one per scene")  # fmt: skip
    recorded = context.negative_prompts if context else None
    if recorded and len(recorded) == context_scenes:
        return list(recorded) + negative
    return [negative[0] if negative else ""] * context_scenes + negative


def expand_story(pipe, previous: MultiSceneOutput, prompts: list[str], context_scenes: int, seed: int,
                 **kwargs) -> MultiSceneOutput:  # fmt: skip
    """Auto-regressive expansion for any multi-scene pipeline: each new scene is generated with the
    last `context_scenes` scenes as clean context, on latents only."""
    output_type = kwargs.pop("output_type", "np")
    negative = kwargs.pop("negative_prompts", None)
    if not (negative is None or isinstance(negative, str)) and len(negative) != len(prompts):
        raise ValueError(f"{len(negative)} negative prompts for {len(prompts)} new scenes")
    story = previous
    for index, prompt in enumerate(prompts):
        skip = max(0, len(story.scene_frames) - context_scenes)
        start = sum(story.scene_frames[:skip])
        negatives = story.negative_prompts[skip:] if story.negative_prompts else None
        window = MultiSceneOutput(
            story.latents[:, start:],
            story.scene_frames[skip:],
            story.prompts[skip:],
            story.seeds[skip:],
            negative_prompts=negatives,
        )
        step_negative = negative if negative is None or isinstance(negative, str) else [negative[index]]
        step = pipe(prompts=[prompt], context=window, seed=seed + skip, output_type="latent",
                    negative_prompts=step_negative, **kwargs)  # fmt: skip
        story = MultiSceneOutput(
            torch.cat([story.latents, step.latents[:, window.latents.shape[1] :]], dim=1),
            story.scene_frames + step.scene_frames[-1:],
            story.prompts + [prompt],
            story.seeds + step.seeds[-1:],
            negative_prompts=(story.negative_prompts or [step.negative_prompts[0]] * skip + step.negative_prompts[:-1])
            + step.negative_prompts[-1:],
        )
    if output_type == "np":
        story.videos = pipe.decode_scenes(story.latents, story.scene_frames)
    return story
