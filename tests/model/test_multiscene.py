"""Tests of `model/multiscene.py`: what every multi-scene pipeline shares."""

import pytest
import torch

from model.multiscene import MultiSceneOutput, scene_negatives


def context(scenes: int, negatives=None) -> MultiSceneOutput:
    return MultiSceneOutput(torch.zeros(1, 2 * scenes, 4, 2, 2), [2] * scenes, [f"p{i}" for i in range(scenes)],
                            list(range(scenes)), negative_prompts=negatives)  # fmt: skip


def test_each_scene_gets_its_negative_prompt_context_first():
    assert scene_negatives(None, 2, context(1)) == ["", "", ""]
    assert scene_negatives("blurry", 1, None) == ["blurry"]
    assert scene_negatives(["a", "b"], 2, context(1, ["old"])) == ["old", "a", "b"]  # the context's, as recorded
    assert scene_negatives(["a"], 1, context(2)) == ["a", "a", "a"]  # unknown for the context: the first new one
    with pytest.raises(ValueError, match="3 negative prompts for 2 new scenes"):
        scene_negatives(["a", "b", "c"], 2, context(2))
