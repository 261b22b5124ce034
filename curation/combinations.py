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

MinerConfig = CombineConfig  # the combine section of the job's config: the miner's settings


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
    shot_ids: list[str], frames: list[int], embeddings: np.ndarray, config: MinerConfig
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
        rows.append({
            "shot_ids": [shot_ids[i] for i in members], "pair_scores": pair_raw, "pair_calibrated": pair_cal,
            "min_relevance": min(pair_cal), "mean_relevance": float(np.mean(pair_cal)), "min_raw": min(pair_raw),
            "mean_raw": float(np.mean(pair_raw)), "total_frames": int(sum(frames[i] for i in members)),
            "status": STATUS_OK if reason is None else STATUS_FILTERED, "filter_reason": reason,
        })  # fmt: skip

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


def mine(shots: pd.DataFrame, embeddings: pd.DataFrame, config: MinerConfig) -> tuple[pd.DataFrame, MinerStats]:
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
