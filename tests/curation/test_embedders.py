"""Tests of `curation/embedders.py`: what is known about an embedder without loading it (its frames
and identity), and the rows it wrote found by that identity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from curation.config import EmbedConfig
from curation.embedders import ColorLayoutEmbedder, expected_identity, frame_spec_for, rows_of_this_embedder


def test_the_colour_embedder_is_known_by_name_and_finds_its_own_rows():
    config = EmbedConfig()
    assert expected_identity(config) == (ColorLayoutEmbedder.name, None)
    rows = pd.DataFrame({"embedder": [ColorLayoutEmbedder.name, "viclip-l14"], "checkpoint_hash": [None, "ab12"]})
    assert rows_of_this_embedder(rows, config)["embedder"].tolist() == [ColorLayoutEmbedder.name]
    spec = frame_spec_for(config)
    assert spec.count == config.frames_per_shot and spec.max_side == config.decode_max_side
    shots = [np.random.default_rng(0).integers(0, 256, (spec.count, 36, 64, 3), dtype=np.uint8)]
    vectors = ColorLayoutEmbedder().embed(shots)
    assert vectors.shape[0] == 1 and np.isclose(np.linalg.norm(vectors[0]), 1.0, atol=1e-5)
