"""Mine ordered combinations of shots that belong together (same characters, same place).

Within each group (a 10-minute clip by default, or a whole video), shots long enough for
training are compared by the cosine of their embeddings. Raw cosines are poorly calibrated
(ViCLIP's matching pairs often sit at 0.2-0.4, and every embedder has its own scale), so each
score is also expressed as a z-score over all shot pairs of its group: "how much more alike than
two random shots of this video". Thresholds apply to that calibrated score.

A combination is N shots in time order whose every pair is relevant enough and no pair is a
near-duplicate (the same shot split in two, or a repeat). Candidates are grown from each shot's
few best partners, so mining is linear in the number of shots, and chosen greedily by their
weakest pair, with each shot used at most `max_uses` times so no shot dominates the dataset.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from curation.config import CombineConfig
from manifests.schema import STATUS_FILTERED, STATUS_OK


@dataclass
class MinerStats:
    groups: int = 0
    combinations_ok: int = 0
    candidates_filtered: int = 0
    groups_without_combinations: Counter = field(default_factory=Counter)  # reason -> count
    shots_too_short: int = 0

    def as_dict(self) -> dict:
        return {
            "groups": self.groups,
            "combinations_ok": self.combinations_ok,
            "candidates_filtered": self.candidates_filtered,
            "groups_without_combinations": dict(self.groups_without_combinations),
            "shots_too_short": self.shots_too_short,
        }


def combination_id(shot_ids: list[str]) -> str:
    return hashlib.blake2b("|".join(shot_ids).encode(), digest_size=10).hexdigest()


def calibrate(similarity: np.ndarray) -> np.ndarray:
    """z-scores of a symmetric cosine matrix, using the statistics of its off-diagonal pairs."""
    upper = similarity[np.triu_indices(len(similarity), k=1)]
    spread = upper.std() if upper.size > 1 else 0.0
    return (similarity - upper.mean()) / max(spread, 1e-6)


def mine_group(
    shot_ids: list[str], frames: list[int], embeddings: np.ndarray, config: CombineConfig
) -> tuple[list[dict], str | None]:
    """Combinations from one group's shots (already in time order). Returns (rows, reason if none)."""
    n, size = len(shot_ids), config.scenes
    if n < size:
        return [], f"fewer than {size} usable shots"
    raw = embeddings @ embeddings.T
    calibrated = calibrate(raw)
    duplicate = raw >= config.duplicate_threshold
    relevant = (calibrated >= config.min_relevance) & ~duplicate
    np.fill_diagonal(relevant, False)

    candidates: set[tuple[int, ...]] = set()
    for anchor in range(n):
        partners = [j for j in np.argsort(-calibrated[anchor]) if j != anchor]
        if not config.keep_all:
            partners = [j for j in partners if relevant[anchor, j]]
        for group in itertools.combinations(partners[: config.neighbors], size - 1):
            candidates.add(tuple(sorted((anchor, *group))))

    rows = score_candidates(sorted(candidates), shot_ids, frames, raw, calibrated, duplicate, config)

    # Greedy choice by weakest pair, capping how often one shot is used.
    uses: Counter = Counter()
    rows.sort(key=lambda r: (r["status"] != STATUS_OK, -r["min_relevance"], -r["mean_relevance"], r["shot_ids"]))
    for row in rows:
        if row["status"] != STATUS_OK:
            continue
        busy = [s for s in row["shot_ids"] if uses[s] >= config.max_uses]
        if busy:
            row["status"] = STATUS_FILTERED
            row["filter_reason"] = f"overlap: {busy[0]} already in {config.max_uses} combinations"
        else:
            uses.update(row["shot_ids"])
    if not any(r["status"] == STATUS_OK for r in rows):
        return (rows if config.keep_all else []), "no combination passed the relevance filters"
    return (rows if config.keep_all else [r for r in rows if r["status"] == STATUS_OK]), None


def score_candidates(candidates: list[tuple[int, ...]], shot_ids: list[str], frames: list[int], raw: np.ndarray,
                     calibrated: np.ndarray, duplicate: np.ndarray, config: CombineConfig) -> list[dict]:  # fmt: skip
    """A row per candidate with its pair scores and status; scored as arrays (a group has hundreds of
    candidates), with each number exactly what scoring one candidate at a time in Python gives.
    Without keep_all, candidates that fail the filters are not returned (nothing would keep them)."""
    if not candidates:
        return []
    members = np.asarray(candidates, dtype=np.intp)  # (candidates, scenes)
    first, second = (
        np.asarray(side, dtype=np.intp) for side in zip(*itertools.combinations(range(members.shape[1]), 2))
    )
    left, right = members[:, first], members[:, second]  # (candidates, pairs), pairs in combinations() order
    pair_raw = raw[left, right].astype(np.float64)
    pair_cal = calibrated[left, right].astype(np.float64)
    near_duplicate = duplicate[left, right].any(axis=1)
    weakest = pair_cal.min(axis=1)
    passed = ~near_duplicate & (weakest >= config.min_relevance)
    mean_cal, mean_raw = _row_means(pair_cal), _row_means(pair_raw)
    least_raw, total_frames = pair_raw.min(axis=1), np.asarray(frames, dtype=np.int64)[members].sum(axis=1)
    rows = []
    for k in range(len(members)) if config.keep_all else np.flatnonzero(passed):
        reason = None
        if near_duplicate[k]:
            reason = f"near-duplicate shots (cosine >= {config.duplicate_threshold:g})"
        elif not passed[k]:
            reason = f"a pair below min relevance {config.min_relevance:g}"
        chosen = members[k].tolist()
        rows.append({
            "shot_ids": [shot_ids[i] for i in chosen], "pair_scores": pair_raw[k].tolist(),
            "pair_calibrated": pair_cal[k].tolist(), "min_relevance": float(weakest[k]),
            "mean_relevance": float(mean_cal[k]), "min_raw": float(least_raw[k]), "mean_raw": float(mean_raw[k]),
            "total_frames": int(total_frames[k]),
            "status": STATUS_OK if reason is None else STATUS_FILTERED, "filter_reason": reason,
        })  # fmt: skip
    return rows


def _row_means(values: np.ndarray) -> np.ndarray:
    """Each row's mean, summed left to right as np.mean sums fewer than 8 numbers (pairwise beyond)."""
    if values.shape[1] >= 8:
        return np.array([np.mean(row.tolist()) for row in values])
    total = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        total += values[:, column]
    return total / values.shape[1]


def mine(shots: pd.DataFrame, embeddings: pd.DataFrame, config: CombineConfig) -> tuple[pd.DataFrame, MinerStats]:
    """Combinations for every group of the manifest: shots.parquet rows joined to their embeddings."""
    stats = MinerStats()
    usable = shots[shots["status"] == STATUS_OK]
    long_enough = usable[usable["num_frames"] >= config.min_shot_frames]
    stats.shots_too_short = len(usable) - len(long_enough)
    if "status" in embeddings:  # failed embeddings (null vectors) are retried by the next run, not mined
        embeddings = embeddings[embeddings["status"].fillna(STATUS_OK) == STATUS_OK]
    table = long_enough.merge(embeddings[["shot_id", "embedding", "embedder"]], on="shot_id", how="inner")
    keys = ["video_id"] + (["clip_index"] if config.within == "clip" else [])
    rows = []
    for key, group in table.sort_values("start_frame").groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        stats.groups += 1
        vectors = np.stack(group["embedding"].to_numpy()).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
        found, reason = mine_group(group["shot_id"].tolist(), group["num_frames"].tolist(), vectors, config)
        if reason:
            stats.groups_without_combinations[reason] += 1
        name = f"{key[0]}" + (f"_c{int(key[1]):03d}" if config.within == "clip" else "")
        for row in found:
            rows.append(row | {"combination_id": combination_id(row["shot_ids"]), "video_id": key[0], "group": name,
                               "embedder": group["embedder"].iloc[0]})  # fmt: skip
    result = pd.DataFrame(rows)
    stats.combinations_ok = int((result["status"] == STATUS_OK).sum()) if len(result) else 0
    stats.candidates_filtered = len(result) - stats.combinations_ok
    return result, stats
