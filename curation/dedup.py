"""Repeated shots across a whole manifest (corpus-wide), from the shot embeddings it holds.

    python -m curation.dedup OUT/                      # writes OUT/corpus_duplicates.parquet
    python -m curation.dedup OUT/ --threshold 0.97     # cosine that makes two shots copies

No all-pairs comparison: as NeMo Curator's semantic deduplication does, the embeddings are first
bucketed by spherical k-means (about `--cluster-size` shots per cluster), then compared all-pairs
within each cluster only, so the cost grows with n x cluster size, not n^2 (100k shots: seconds on
two cores, tests/curation/test_dedup.py). Near-copies land in the same cluster because they sit
next to each other; a pair split across two clusters is missed, the method's known trade-off.
Pairs at or above the threshold are joined into groups; each group keeps its first shot (by
shot_id: video, then time) and the others are written as its duplicates. Training's pretraining
pool skips them (`training/data.py`); within one video the job flags repeats itself
(curation/duplicates.py, `duplicate_of`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from manifests.corpus import FILE, write_corpus_duplicates
from manifests.io import ManifestError, read_table
from manifests.schema import CORPUS_DUPLICATES, Status
from manifests.store import location


def kmeans(vectors: np.ndarray, clusters: int, iterations: int = 8, seed: int = 0, chunk: int = 16384) -> np.ndarray:
    """Spherical k-means (cosine to the centroids) of unit vectors: each vector's two nearest
    centroids after the last iteration, (n, 2), computed in chunks of rows."""
    rng = np.random.default_rng(seed)
    centroids = vectors[rng.choice(len(vectors), size=clusters, replace=False)].copy()
    nearest = np.zeros((len(vectors), 2), dtype=np.int64)
    for _ in range(iterations):
        for start in range(0, len(vectors), chunk):
            scores = vectors[start : start + chunk] @ centroids.T
            top = np.argpartition(-scores, 1, axis=1)[:, :2]
            first = np.take_along_axis(scores, top, axis=1).argmax(axis=1)
            nearest[start : start + chunk, 0] = np.take_along_axis(top, first[:, None], axis=1)[:, 0]
            nearest[start : start + chunk, 1] = np.take_along_axis(top, 1 - first[:, None], axis=1)[:, 0]
        sums = np.zeros_like(centroids)
        np.add.at(sums, nearest[:, 0], vectors)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        centroids = np.where(norms > 0, sums / np.maximum(norms, 1e-12), centroids)
    return nearest


def near_pairs(vectors: np.ndarray, threshold: float, cluster_size: int = 1000, seed: int = 0):
    """(i, j, cosine) with i < j of unit vectors at or above `threshold`, compared within buckets.

    Each vector sits in the buckets of its two nearest centroids: a near-copy lies next to its
    original, so the two share a nearest centroid or straddle the boundary between the same two
    (one probe more, as multi-probe hashing does), at twice the comparisons."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    clusters = round(len(vectors) / cluster_size)
    if clusters < 3:
        buckets = [np.arange(len(vectors))]
    else:
        nearest = kmeans(vectors, clusters, seed=seed)
        owner = np.concatenate([nearest[:, 0], nearest[:, 1]])
        index = np.concatenate([np.arange(len(vectors))] * 2)
        order = np.argsort(owner, kind="stable")
        buckets = np.split(index[order], np.flatnonzero(np.diff(owner[order])) + 1)
    found: dict[tuple[int, int], float] = {}
    for members in buckets:
        members = np.sort(members)
        similar = vectors[members] @ vectors[members].T
        rows, cols = np.nonzero(np.triu(similar >= threshold, k=1))
        for r, c in zip(rows.tolist(), cols.tolist()):
            found[(int(members[r]), int(members[c]))] = float(similar[r, c])
    return [(i, j, s) for (i, j), s in sorted(found.items())]


def groups(count: int, pairs) -> list[tuple[int, int, float]]:
    """(member, first member of its group, the member's best cosine in the group) for every member
    but the first of the groups the pairs join (union-find; the first is the smallest index)."""
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    best: dict[int, float] = {}
    for i, j, similarity in pairs:
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
        best[i], best[j] = max(best.get(i, 0.0), similarity), max(best.get(j, 0.0), similarity)
    return [(i, root(i), best[i]) for i in sorted(best) if root(i) != i]


def deduplicate(
    manifest_dir, threshold: float = 0.97, cluster_size: int = 1000, embedder: str | None = None
) -> pd.DataFrame:
    """The manifest's corpus duplicates (CORPUS_DUPLICATES rows), from the ok embeddings of one embedder
    (the one with most rows unless named) of ok shots; written to corpus_duplicates.parquet."""
    manifest_dir = location(manifest_dir)
    shots = read_table(manifest_dir, "shots", columns=["shot_id", "status"])
    embeddings = read_table(manifest_dir, "shot_embeddings", columns=["shot_id", "embedder", "status", "embedding"])
    embeddings = embeddings[(embeddings["status"].fillna(Status.OK) == Status.OK) & embeddings["embedding"].notna()]
    if embedder is None and len(embeddings):
        embedder = embeddings["embedder"].value_counts().index[0]
    ok = set(shots.loc[shots["status"] == Status.OK, "shot_id"])
    rows = embeddings[(embeddings["embedder"] == embedder) & embeddings["shot_id"].isin(ok)]
    rows = rows.sort_values("shot_id").drop_duplicates("shot_id")
    found = pd.DataFrame({name: pd.Series(dtype=object) for name in CORPUS_DUPLICATES.names})
    if len(rows) > 1:
        vectors = np.stack(rows["embedding"].map(lambda v: np.asarray(v, np.float32)).to_list())
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        ids = rows["shot_id"].to_numpy()
        members = groups(len(ids), near_pairs(vectors, threshold, cluster_size))
        found = pd.DataFrame({"shot_id": [ids[i] for i, _, _ in members], "duplicate_of": [ids[r] for _, r, _ in members],
                              "similarity": [s for _, _, s in members], "embedder": embedder})  # fmt: skip
    write_corpus_duplicates(manifest_dir, found)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m curation.dedup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("manifest", help="a curation output folder (local or s3://)")
    parser.add_argument("--threshold", type=float, default=0.97, help="cosine that makes two shots copies")
    parser.add_argument("--cluster-size", type=int, default=1000, help="shots per k-means bucket (about)")
    parser.add_argument("--embedder", help="whose embeddings (default: the one with most rows)")
    args = parser.parse_args(argv)
    try:
        found = deduplicate(args.manifest, args.threshold, args.cluster_size, args.embedder)
    except ManifestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(found)} shots repeat another shot of the manifest (cosine >= {args.threshold:g}); "
          f"written to {location(args.manifest) / FILE}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
