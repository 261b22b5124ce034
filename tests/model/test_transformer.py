"""Tests of `model/transformer.py`: the CogVideoX transformer's old import path still works."""

import model.cogvideox
import model.transformer


def test_the_old_path_gives_the_same_classes():
    assert model.transformer.Mask2DiTTransformer3DModel is model.cogvideox.Mask2DiTTransformer3DModel
    assert model.transformer.Mask2DiTAttnProcessor is model.cogvideox.Mask2DiTAttnProcessor
