"""Tests of `training/encoding.py`: from a data-loader batch to model inputs: latents and caption
embeddings, encoded or precomputed."""

from __future__ import annotations

import numpy as np


def test_layout_batches_are_uniform_deterministic_and_never_starve_a_rare_layout():
    from training.data import LayoutBatchSampler

    class Fake:
        config = type("C", (), {"scene_frames": "from_shots"})()

        def layout(self, draw):  # 1 draw in 10, at random as real draws are, has the rare layout
            return (9, 17) if np.random.default_rng(draw).random() < 0.1 else (17, 17)

    def batches(start, count):
        sampler = iter(LayoutBatchSampler(Fake(), start, rank=0, world=1, batch_size=4))
        return [next(sampler) for _ in range(count)]

    first = batches(0, 50)
    assert first == batches(0, 50)  # a pure function of the stream position
    assert all(len({Fake().layout(draw) for _, draw in batch}) == 1 for batch in first)
    rare = [batch for batch in first if Fake().layout(batch[0][1]) == (9, 17)]
    assert rare and sum(len(batch) for batch in rare) > 2 * len(
        rare
    )  # the rare layout trains, in (mostly) full batches
    positions = [index for batch in first for index, _ in batch]
    assert positions == sorted(set(positions)) and set(positions) <= set(range(200))  # each position at most once
    assert batches(8, 3) == first[2:5]  # resuming at sample 8 continues with batch 2
