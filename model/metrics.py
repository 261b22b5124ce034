"""The metrics, as pure functions: the paper's (Table 1) and the field's multi-shot ones (HoloCine,
ShotStream, MultiShotMaster). `training/evaluate.py` and validation compute them on videos.

- `visual_consistency`: the mean pairwise cosine x 100 between a video's scene embeddings
  (`scene_embedding`: the normalised mean of a scene's normalised frame embeddings);
  `semantic_consistency`: each scene's cosine x 100 with its prompt's text embedding.
- `frechet_distance`: FVD's distance between Gaussian fits of two feature sets.

- `shot_cut_accuracy`: does a generated video cut where its scenes change, and only there.
  HoloCine's SCA = exp(-NSD), NSD = (E_matched + E_penalty) / F_total: detected cuts are matched one
  to one with the requested ones (the matching of least total cost, found exactly by dynamic
  programming over the two sorted lists); E_matched is the frames between matched cuts, and every
  missed or extra cut costs `penalty` frames. HoloCine leaves the penalty unstated; here it is one
  mean shot length, F_total / (requested cuts + 1), so one missing cut in a three-shot video gives
  SCA <= exp(-1/3). The penalty is written next to every score.
- `inter_shot_consistency`: the mean cosine between scenes that share a character (an `ActorK` of
  their prompts), HoloCine's inter-shot rule; None when no two scenes share one.
- `intra_shot_consistency`: the mean cosine of consecutive frame embeddings within each scene.
- `boundary_matches` / `BoundaryScore`: precision, recall and F1 of detected shot boundaries within
  +-k frames of the true ones (one to one), the shot detection literature's score.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

ACTOR = re.compile(r"\bActor\d+\b")


@dataclass(frozen=True)
class CutScore:
    sca: float  # exp(-nsd), in (0, 1]
    nsd: float  # normalised shot discrepancy
    matched: int  # detected cuts matched to a requested one
    missing: int  # requested cuts with no detected cut
    extra: int  # detected cuts with no requested cut
    matched_error: int  # frames between matched cuts, summed
    penalty: float  # frames each missing or extra cut cost

    def as_dict(self) -> dict:
        return asdict(self)


def shot_cut_accuracy(
    detected: Sequence[int], expected: Sequence[int], total_frames: int, penalty: float | None = None
) -> CutScore:
    """SCA of `detected` cut frames against the `expected` ones in a video of `total_frames` frames."""
    if total_frames <= 0:
        raise ValueError(f"total_frames must be positive, got {total_frames}")
    found, wanted = sorted(int(c) for c in detected), sorted(int(c) for c in expected)
    cost = float(penalty) if penalty is not None else total_frames / (len(wanted) + 1)
    # best[i][j]: least cost of aligning found[:i] with wanted[:j]; a pair is matched, or one side
    # is left out at `cost` (missing or extra).
    best = [[0.0] * (len(wanted) + 1) for _ in range(len(found) + 1)]
    step = [[""] * (len(wanted) + 1) for _ in range(len(found) + 1)]
    for i in range(len(found) + 1):
        for j in range(len(wanted) + 1):
            if i == 0 and j == 0:
                continue
            options = []
            if i and j:
                options.append((best[i - 1][j - 1] + abs(found[i - 1] - wanted[j - 1]), "match"))
            if i:
                options.append((best[i - 1][j] + cost, "extra"))
            if j:
                options.append((best[i][j - 1] + cost, "missing"))
            best[i][j], step[i][j] = min(options)
    counts, error, i, j = {"match": 0, "extra": 0, "missing": 0}, 0, len(found), len(wanted)
    while i or j:
        move = step[i][j]
        counts[move] += 1
        if move == "match":
            error += abs(found[i - 1] - wanted[j - 1])
            i, j = i - 1, j - 1
        elif move == "extra":
            i -= 1
        else:
            j -= 1
    nsd = best[len(found)][len(wanted)] / total_frames
    return CutScore(math.exp(-nsd), nsd, counts["match"], counts["missing"], counts["extra"], error, cost)


@dataclass(frozen=True)
class BoundaryScore:
    """Shot-boundary detection against ground truth: a detected cut within `tolerance` frames of a
    true one matches it, one to one."""

    precision: float
    recall: float
    f1: float
    matched: int
    extra: int  # detected, no true cut near it
    missed: int  # true, no detected cut near it

    @staticmethod
    def of(matched: int, extra: int, missed: int) -> BoundaryScore:
        precision = matched / (matched + extra) if matched + extra else 1.0
        recall = matched / (matched + missed) if matched + missed else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return BoundaryScore(precision, recall, f1, matched, extra, missed)


def boundary_matches(detected: Sequence[int], expected: Sequence[int], tolerance: int = 2) -> tuple[int, int, int]:
    """(matched, extra, missed): the most one-to-one pairs with |detected - expected| <= tolerance.
    On sorted lists, pairing each true cut with the earliest unpaired detection in its window is
    optimal (windows are intervals of equal width)."""
    found, wanted = sorted(int(c) for c in detected), sorted(int(c) for c in expected)
    matched, i = 0, 0
    for cut in wanted:
        while i < len(found) and found[i] < cut - tolerance:
            i += 1
        if i < len(found) and found[i] <= cut + tolerance:
            matched += 1
            i += 1
    return matched, len(found) - matched, len(wanted) - matched


def scene_boundaries(scene_frames: Sequence[int]) -> list[int]:
    """The cut frames of scenes played one after another: the first frame of every scene but the first."""
    cuts, position = [], 0
    for frames in scene_frames[:-1]:
        position += int(frames)
        cuts.append(position)
    return cuts


def characters(prompt: str) -> set[str]:
    return set(ACTOR.findall(prompt))


def character_pairs(prompts: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs of scenes (i < j) whose prompts name a common ActorK."""
    names = [characters(p) for p in prompts]
    return [(i, j) for i in range(len(names)) for j in range(i + 1, len(names)) if names[i] & names[j]]


def _cosine(a, b) -> float:
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def inter_shot_consistency(scene_embeddings: Sequence, prompts: Sequence[str]) -> float | None:
    """Mean cosine (x 100) over pairs of scenes sharing a character; None without such a pair."""
    pairs = character_pairs(prompts)
    if len(scene_embeddings) != len(prompts):
        raise ValueError(f"{len(scene_embeddings)} scene embeddings for {len(prompts)} prompts")
    if not pairs:
        return None
    return 100.0 * sum(_cosine(scene_embeddings[i], scene_embeddings[j]) for i, j in pairs) / len(pairs)


def intra_shot_consistency(frame_embeddings_per_scene: Sequence) -> float:
    """Mean cosine (x 100) of consecutive frame embeddings within each scene, over every such pair."""
    total, count = 0.0, 0
    for frames in frame_embeddings_per_scene:
        for a, b in zip(frames[:-1], frames[1:]):
            total += _cosine(a, b)
            count += 1
    if not count:
        raise ValueError("intra-shot consistency needs scenes of at least two frames")
    return 100.0 * total / count


# --- the paper's metrics (Table 1): visual, semantic and sequence consistency, and FVD --------------


def scene_embedding(frame_embeddings: torch.Tensor) -> torch.Tensor:
    """Mean of L2-normalised frame embeddings, normalised again (a unit vector per scene)."""
    from torch.nn.functional import normalize

    return normalize(normalize(frame_embeddings, dim=-1).mean(0), dim=0)


def visual_consistency(scenes: list[torch.Tensor]) -> float:
    """Mean pairwise cosine x 100 between scene embeddings (unit vectors)."""
    pairs = list(itertools.combinations(range(len(scenes)), 2))
    if not pairs:
        return 100.0
    return float(np.mean([float(scenes[i] @ scenes[j]) for i, j in pairs]) * 100)


def semantic_consistency(scenes: list[torch.Tensor], texts: torch.Tensor) -> list[float]:
    """Per-scene CLIP score x 100: cosine between scene embedding and its prompt's text embedding."""
    return [float(scene @ text) * 100 for scene, text in zip(scenes, texts)]


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets a (N, D) and b (M, D)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root = linalg.sqrtm(cov_a @ cov_b)
    root = (root[0] if isinstance(root, tuple) else root).real  # older SciPy also returned an error estimate
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))
