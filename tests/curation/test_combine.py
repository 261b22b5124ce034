"""Tests of `curation/combine.py`: mine ordered combinations of shots that belong together (same
characters, same place)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from curation.combine import calibrate, mine, mine_group
from curation.config import CombineConfig


def clustered_embeddings(seed=0):
    """9 shots in time order: 0,2,4 show one scene; 1,3,5 another; 6 repeats shot 0; 7,8 are unrelated."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=16), rng.normal(size=16)
    vectors = [a + 0.3 * rng.normal(size=16) if i in (0, 2, 4) else b + 0.3 * rng.normal(size=16) for i in range(6)]
    vectors += [vectors[0] + 0.01 * rng.normal(size=16), rng.normal(size=16), rng.normal(size=16)]
    matrix = np.stack(vectors).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def plain_mine_group(shot_ids, frames, embeddings, config):
    """The miner of one group written plainly, one candidate at a time: the oracle of the array version."""
    import itertools
    from collections import Counter

    raw = embeddings @ embeddings.T
    calibrated, duplicate = calibrate(raw), raw >= config.duplicate_threshold
    relevant = (calibrated >= config.min_relevance) & ~duplicate
    np.fill_diagonal(relevant, False)
    candidates = set()
    for anchor in range(len(shot_ids)):
        partners = [
            j for j in np.argsort(-calibrated[anchor]) if j != anchor and (config.keep_all or relevant[anchor, j])
        ]
        for group in itertools.combinations(partners[: config.neighbors], config.scenes - 1):
            candidates.add(tuple(sorted((anchor, *group))))
    rows = []
    for members in candidates:
        pairs = list(itertools.combinations(members, 2))
        pair_raw = [float(raw[i, j]) for i, j in pairs]
        pair_cal = [float(calibrated[i, j]) for i, j in pairs]
        reason = None
        if any(duplicate[i, j] for i, j in pairs):
            reason = f"near-duplicate shots (cosine >= {config.duplicate_threshold:g})"
        elif min(pair_cal) < config.min_relevance:
            reason = f"a pair below min relevance {config.min_relevance:g}"
        rows.append({"shot_ids": [shot_ids[i] for i in members], "pair_scores": pair_raw, "pair_calibrated": pair_cal,
                     "min_relevance": min(pair_cal), "mean_relevance": float(np.mean(pair_cal)), "min_raw": min(pair_raw),
                     "mean_raw": float(np.mean(pair_raw)), "total_frames": int(sum(frames[i] for i in members)),
                     "status": "ok" if reason is None else "filtered", "filter_reason": reason})  # fmt: skip
    uses = Counter()
    rows.sort(key=lambda r: (r["status"] != "ok", -r["min_relevance"], -r["mean_relevance"], r["shot_ids"]))
    for row in rows:
        if row["status"] == "ok":
            busy = [s for s in row["shot_ids"] if uses[s] >= config.max_uses]
            if busy:
                row["status"], row["filter_reason"] = (
                    "filtered",
                    f"overlap: {busy[0]} already in {config.max_uses} combinations",
                )
            else:
                uses.update(row["shot_ids"])
    if not any(r["status"] == "ok" for r in rows):
        return (rows if config.keep_all else []), "no combination passed the relevance filters"
    return (rows if config.keep_all else [r for r in rows if r["status"] == "ok"]), None


def test_miner_finds_the_known_combinations_and_rejects_duplicates():
    ids = [f"s{i}" for i in range(9)]
    rows, reason = mine_group(ids, [60] * 9, clustered_embeddings(), CombineConfig(max_uses=1))
    assert reason is None
    found = sorted(tuple(r["shot_ids"]) for r in rows)
    # Shot 6 duplicates shot 0, so no combination holds both; each shot is used at most once.
    assert ("s1", "s3", "s5") in found
    assert any(set(c) <= {"s0", "s2", "s4", "s6"} and not {"s0", "s6"} <= set(c) for c in found)
    assert all(not {"s0", "s6"} <= set(c) for c in found)
    used = [s for c in found for s in c]
    assert len(used) == len(set(used))
    assert all(r["status"] == "ok" and r["min_relevance"] >= 0.5 and len(r["pair_scores"]) == 3 for r in rows)


def test_miner_overlap_limit_and_keep_all_mode():
    ids = [f"s{i}" for i in range(9)]
    rows, _ = mine_group(ids, [60] * 9, clustered_embeddings(), CombineConfig(max_uses=2, keep_all=True))
    ok = [r for r in rows if r["status"] == "ok"]
    counts = pd.Series([s for r in ok for s in r["shot_ids"]]).value_counts()
    assert counts.max() <= 2
    reasons = {r["filter_reason"].split(" (")[0].split(":")[0] for r in rows if r["status"] != "ok"}
    assert "near-duplicate shots" in reasons and "a pair below min relevance 0.5" in reasons


def test_calibration_is_a_z_score_over_pairs():
    sims = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.3], [0.4, 0.3, 1.0]])
    z = calibrate(sims)
    pairs = np.array([0.2, 0.4, 0.3])
    assert z[0, 2] == pytest.approx((0.4 - pairs.mean()) / pairs.std())


def test_videos_with_too_few_usable_shots_yield_none_and_are_counted():
    shots = pd.DataFrame({
        "shot_id": ["a0", "a1", "b0", "b1", "b2"], "video_id": ["a", "a", "b", "b", "b"], "clip_index": [0] * 5,
        "status": ["ok"] * 5, "num_frames": [60, 60, 60, 60, 10], "start_frame": [0, 60, 0, 60, 120],
    })  # fmt: skip
    vectors = clustered_embeddings()[:5]
    embeddings = pd.DataFrame({"shot_id": shots["shot_id"], "embedding": list(vectors), "embedder": "test"})
    combos, stats = mine(shots, embeddings, CombineConfig())
    assert len(combos) == 0 and stats.shots_too_short == 1
    assert stats.groups_without_combinations == {"fewer than 3 usable shots": 2}


@pytest.mark.parametrize("scenes", [2, 3, 5])
def test_the_array_miner_equals_the_miner_written_one_candidate_at_a_time(scenes):
    rng = np.random.default_rng(scenes)
    for _ in range(6):
        n = int(rng.integers(scenes, 24))
        vectors = rng.normal(size=(3, 16))[rng.integers(0, 3, n)] + rng.uniform(0.1, 1.0) * rng.normal(size=(n, 16))
        if n > 2:
            vectors[1] = vectors[0]  # a near-duplicate pair
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
        ids = [f"v_{int(k):07d}" for k in sorted(rng.choice(10**6, n, replace=False))]
        frames = rng.integers(49, 300, n).tolist()
        for keep_all in (False, True):
            config = CombineConfig(scenes=scenes, keep_all=keep_all, min_relevance=float(rng.uniform(-0.5, 1.5)),
                                   neighbors=int(rng.integers(3, 9)), max_uses=int(rng.integers(1, 4)))  # fmt: skip
            # every number bit for bit, every status and reason word for word, in the same order
            assert mine_group(ids, frames, vectors, config) == plain_mine_group(ids, frames, vectors, config)


def test_the_miner_in_ray_tasks_gives_the_rows_of_the_miner_in_one_process(ray_local):
    """Groups are independent, so mining them in parallel tasks changes nothing: the same rows in the
    same order, bit for bit, and the same counts."""
    rng = np.random.default_rng(7)
    rows, vectors = [], []
    for video in range(40):
        for clip in range(2):
            n = int(rng.integers(2, 12))
            centre = rng.normal(size=(2, 16))
            for i in range(n):
                rows.append({"shot_id": f"v{video:03d}_{clip}_{i:02d}", "video_id": f"v{video:03d}", "clip_index": clip,
                             "status": "ok", "num_frames": int(rng.integers(40, 200)), "start_frame": 1000 * clip + 50 * i})  # fmt: skip
                vectors.append(centre[i % 2] + 0.4 * rng.normal(size=16))
    shots = pd.DataFrame(rows)
    embeddings = pd.DataFrame({"shot_id": shots["shot_id"], "embedding": vectors, "embedder": "test"})
    for within in ("clip", "video"):
        config = CombineConfig(within=within, min_relevance=0.2)
        serial, serial_stats = mine(shots, embeddings, config, parallel_from=10**9)
        parallel, parallel_stats = mine(shots, embeddings, config, parallel_from=1)
        assert len(serial) > 20
        pd.testing.assert_frame_equal(serial, parallel)
        assert serial_stats.as_dict() == parallel_stats.as_dict()
