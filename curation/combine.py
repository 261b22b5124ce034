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

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from curation.config import CombineConfig, CurationConfig
from curation.driver import Driver
from curation.embedders import rows_of_this_embedder
from curation.stage import Stage
from manifests.io import read_table, remove_part, table_video_ids, write_part
from manifests.schema import CombinationRecord, Status, combination_id


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

    if not candidates:
        return [], "no combination passed the relevance filters"
    members = np.asarray(sorted(candidates), dtype=np.intp)  # (candidates, scenes), each in time order
    scores = score_candidates(members, raw, calibrated, duplicate, config)
    # Greedy choice by weakest pair (then mean, then shot ids), capping how often one shot is used.
    rank = np.argsort(np.argsort(np.asarray(shot_ids)))  # comparing ranks compares the ids' lists
    order = np.lexsort((*(rank[members[:, c]] for c in reversed(range(size))), -scores.mean_cal, -scores.weakest,
                        ~scores.passed))  # fmt: skip
    uses, overlap, kept = [0] * n, {}, []
    for k in order.tolist():
        if not scores.passed[k]:
            continue
        chosen = members[k].tolist()
        busy = [i for i in chosen if uses[i] >= config.max_uses]
        if busy:
            overlap[k] = f"overlap: {shot_ids[busy[0]]} already in {config.max_uses} combinations"
            continue
        for i in chosen:
            uses[i] += 1
        kept.append(k)
    shown = order.tolist() if config.keep_all else kept
    rows = [scores.row(k, shot_ids, frames, overlap.get(k), config) for k in shown]
    if not kept:
        return (rows if config.keep_all else []), "no combination passed the relevance filters"
    return rows, None


@dataclass
class CandidateScores:
    """Every candidate's pair scores as arrays (a group has hundreds of candidates); each number is
    exactly what scoring one candidate at a time in Python gives."""

    members: np.ndarray  # (candidates, scenes) shot indices
    pair_raw: np.ndarray  # (candidates, pairs) cosines, pairs in itertools.combinations order
    pair_cal: np.ndarray  # the same pairs' calibrated scores
    near_duplicate: np.ndarray  # (candidates,) some pair at or above the duplicate threshold
    weakest: np.ndarray  # the lowest calibrated pair
    mean_cal: np.ndarray
    mean_raw: np.ndarray
    least_raw: np.ndarray
    passed: np.ndarray  # no near-duplicate, weakest pair at or above min relevance

    def row(self, k: int, shot_ids: list[str], frames: list[int], overlap: str | None, config: CombineConfig) -> dict:
        reason = overlap
        if self.near_duplicate[k]:
            reason = f"near-duplicate shots (cosine >= {config.duplicate_threshold:g})"
        elif not self.passed[k]:
            reason = f"a pair below min relevance {config.min_relevance:g}"
        chosen = self.members[k].tolist()
        return {
            "shot_ids": [shot_ids[i] for i in chosen], "pair_scores": self.pair_raw[k].tolist(),
            "pair_calibrated": self.pair_cal[k].tolist(), "min_relevance": float(self.weakest[k]),
            "mean_relevance": float(self.mean_cal[k]), "min_raw": float(self.least_raw[k]),
            "mean_raw": float(self.mean_raw[k]), "total_frames": int(sum(frames[i] for i in chosen)),
            "status": Status.OK if reason is None else Status.FILTERED, "filter_reason": reason,
        }  # fmt: skip


def score_candidates(members: np.ndarray, raw: np.ndarray, calibrated: np.ndarray, duplicate: np.ndarray,
                     config: CombineConfig) -> CandidateScores:  # fmt: skip
    first, second = (
        np.asarray(side, dtype=np.intp) for side in zip(*itertools.combinations(range(members.shape[1]), 2))
    )
    left, right = members[:, first], members[:, second]
    pair_raw = raw[left, right].astype(np.float64)
    pair_cal = calibrated[left, right].astype(np.float64)
    near_duplicate = duplicate[left, right].any(axis=1)
    weakest = pair_cal.min(axis=1)
    passed = ~near_duplicate & (weakest >= config.min_relevance)
    return CandidateScores(members, pair_raw, pair_cal, near_duplicate, weakest, _row_means(pair_cal),
                           _row_means(pair_raw), pair_raw.min(axis=1), passed)  # fmt: skip


def _row_means(values: np.ndarray) -> np.ndarray:
    """Each row's mean, summed left to right as np.mean sums fewer than 8 numbers (pairwise beyond)."""
    if values.shape[1] >= 8:
        return np.array([np.mean(row.tolist()) for row in values])
    total = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        total += values[:, column]
    return total / values.shape[1]


PARALLEL_GROUPS = 2000  # from this many groups on, the miner runs as Ray tasks (when Ray is up)


@dataclass(frozen=True)
class Group:
    """One group's shots in time order, as the miner takes them."""

    key: tuple
    shot_ids: list[str]
    frames: list[int]
    vectors: np.ndarray  # (shots, dim) float32, unit length
    embedder: str


def mine_groups(groups: list[Group], config: CombineConfig) -> list[tuple[list[dict], str | None]]:
    """`mine_group` over groups, in order (the body of one miner task)."""
    return [mine_group(g.shot_ids, g.frames, g.vectors, config) for g in groups]


def mine_all(groups: list[Group], config: CombineConfig, parallel_from: int = PARALLEL_GROUPS):
    """Every group mined, results in the groups' order: in this process, or, from `parallel_from`
    groups on with Ray running, as Ray tasks over runs of groups (a group is compared only within
    itself, so the rows are the same bit for bit; the miner took 6.3 ms per video in one process)."""
    import ray

    if len(groups) < parallel_from or not ray.is_initialized():
        return mine_groups(groups, config)
    tasks = max(1, 2 * int(ray.cluster_resources().get("CPU", 1)))
    size = -(-len(groups) // tasks)
    remote = ray.remote(mine_groups).options(num_cpus=1)
    refs = [remote.remote(groups[i : i + size], config) for i in range(0, len(groups), size)]
    return [result for part in ray.get(refs) for result in part]


def mine(shots: pd.DataFrame, embeddings: pd.DataFrame, config: CombineConfig,
         parallel_from: int = PARALLEL_GROUPS) -> tuple[pd.DataFrame, MinerStats]:  # fmt: skip
    """Combinations for every group of the manifest: shots.parquet rows joined to their embeddings."""
    stats = MinerStats()
    usable = shots[shots["status"] == Status.OK]
    long_enough = usable[usable["num_frames"] >= config.min_shot_frames]
    stats.shots_too_short = len(usable) - len(long_enough)
    if "status" in embeddings:  # failed embeddings (null vectors) are retried by the next run, not mined
        embeddings = embeddings[embeddings["status"].fillna(Status.OK) == Status.OK]
    table = long_enough.merge(embeddings[["shot_id", "embedding", "embedder"]], on="shot_id", how="inner")
    keys = ["video_id"] + (["clip_index"] if config.within == "clip" else [])
    groups = []
    for key, group in table.sort_values("start_frame").groupby(keys, sort=True):
        vectors = np.stack(group["embedding"].to_numpy()).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
        groups.append(Group(key if isinstance(key, tuple) else (key,), group["shot_id"].tolist(),
                            group["num_frames"].tolist(), vectors, group["embedder"].iloc[0]))  # fmt: skip
    stats.groups = len(groups)
    rows = []
    for group, (found, reason) in zip(groups, mine_all(groups, config, parallel_from)):
        if reason:
            stats.groups_without_combinations[reason] += 1
        key = group.key
        name = f"{key[0]}" + (f"_c{int(key[1]):03d}" if config.within == "clip" else "")
        for row in found:
            rows.append(CombinationRecord(**row, combination_id=combination_id(row["shot_ids"]), video_id=key[0],
                                          group=name, embedder=group.embedder))  # fmt: skip
    result = pd.DataFrame([row.as_dict() for row in rows])
    stats.combinations_ok = int((result["status"] == Status.OK).sum()) if len(result) else 0
    stats.candidates_filtered = len(result) - stats.combinations_ok
    return result, stats


class Combine(Stage):
    """Mine combinations over the whole manifest once every video is embedded (cheap: per clip, on
    the driver), so videos of earlier runs combine with the same thresholds as this run's."""

    name = "combine"
    about = "relevance-filtered ordered shot combinations per clip, combinations.parquet (driver)"

    def __init__(self, config: CurationConfig):
        self.config = config
        self.report: dict = {}

    def finish(self, driver: Driver) -> None:
        self.report = combine_manifest(self.config, driver.table("shots"))


def combine_manifest(config: CurationConfig, shots=None) -> dict:
    """combinations.parquet from shots.parquet (or `shots`, the table the caller has) and this
    embedder's shot_embeddings.parquet."""
    began = time.perf_counter()
    embeddings = rows_of_this_embedder(read_table(config.output, "shot_embeddings", missing_ok=True), config.embed)
    shots = read_table(config.output, "shots", missing_ok=True) if shots is None else shots
    combos, stats = mine(shots, embeddings, config.combine)
    stale = table_video_ids(config.output, "combinations")
    for video_id, rows in combos.groupby("video_id") if len(combos) else []:
        write_part(config.output, "combinations", video_id, rows)
        stale.discard(video_id)
    # Only videos that were mined again and now yield nothing lose their combinations (stricter
    # thresholds); a video whose shots are missing keeps everything derived from it.
    for video_id in stale & set(shots["video_id"]):
        remove_part(config.output, "combinations", video_id)
        remove_part(config.output, "annotations", video_id)  # their captions would dangle
    return stats.as_dict() | {"seconds": time.perf_counter() - began}
