"""Tests of `curation/dedup.py`: corpus-wide repeats found by bucketing (no all-pairs) at 100k
shots, grouped to their first shot and written to corpus_duplicates.parquet (pretraining skips
them: tests/training/test_data.py)."""

from __future__ import annotations

import numpy as np

from curation.dedup import groups, main, near_pairs


def _corpus(count: int, dim: int = 64, copies: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    originals = rng.choice(count - copies, size=copies, replace=False)
    for k, original in enumerate(originals):  # the last `copies` rows repeat earlier ones, re-encoded
        copy = vectors[original] + rng.normal(scale=0.01, size=dim).astype(np.float32)
        vectors[count - copies + k] = copy / np.linalg.norm(copy)
    return vectors, {(int(o), count - copies + k) for k, o in enumerate(originals)}


def test_100k_shots_find_every_planted_copy_and_nothing_else():
    vectors, planted = _corpus(100_000)
    pairs = near_pairs(vectors, threshold=0.97, cluster_size=1000)
    assert {(i, j) for i, j, _ in pairs} == planted
    assert all(s >= 0.97 for _, _, s in pairs)


def test_groups_point_every_member_at_the_first():
    assert groups(6, [(3, 5, 0.99), (1, 3, 0.98), (0, 2, 0.975)]) == [(2, 0, 0.975), (3, 1, 0.99), (5, 1, 0.99)]
    assert groups(3, []) == []


def test_the_command_writes_the_file_of_repeats(tmp_path, capsys):
    from manifests.corpus import corpus_duplicates
    from manifests.io import write_part
    from tests.support.manifests import shot

    rng = np.random.default_rng(1)
    base = rng.normal(size=16).astype(np.float32)
    for v in range(3):
        rows = [shot(f"v{v}", s) for s in range(2)]
        write_part(tmp_path, "shots", f"v{v}", rows)
        embeddings = []
        for row in rows:
            vector = base if row["shot_id"] in ("v0_0000000", "v2_0000050") else rng.normal(size=16)
            embeddings.append({"shot_id": row["shot_id"], "video_id": f"v{v}", "embedder": "color-layout",
                               "status": "ok", "embedding": (vector / np.linalg.norm(vector)).tolist()})  # fmt: skip
        write_part(tmp_path, "shot_embeddings", f"v{v}", embeddings)
    assert main([str(tmp_path)]) == 0
    assert "1 shots repeat another shot" in capsys.readouterr().out
    assert corpus_duplicates(tmp_path) == {"v2_0000050"}
