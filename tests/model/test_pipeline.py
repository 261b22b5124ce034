"""Tests of `model/pipeline.py`: the CogVideoX pipeline's old import path still works."""

import model.cogvideox_pipeline
import model.multiscene
import model.pipeline


def test_the_old_path_gives_the_same_pipeline_and_parts():
    assert model.pipeline.Mask2DiTPipeline is model.cogvideox_pipeline.Mask2DiTPipeline
    assert model.pipeline.MultiSceneOutput is model.multiscene.MultiSceneOutput
    assert model.pipeline.expand_story is model.multiscene.expand_story
