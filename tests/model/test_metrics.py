"""Tests of `model/metrics.py`: multi-shot metrics of the field (HoloCine, ShotStream,
MultiShotMaster), as pure functions."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from model.feature_extractors import I3DFeatures
from model.metrics import (
    character_pairs,
    frechet_distance,
    inter_shot_consistency,
    intra_shot_consistency,
    scene_boundaries,
    scene_embedding,
    semantic_consistency,
    shot_cut_accuracy,
    visual_consistency,
)


def brute_force_cost(found, wanted, penalty):
    """Least cost over every one-to-one matching (order-preserving or not)."""
    best = (len(found) + len(wanted)) * penalty
    for k in range(1, min(len(found), len(wanted)) + 1):
        for chosen in itertools.combinations(range(len(found)), k):
            for targets in itertools.permutations(range(len(wanted)), k):
                cost = sum(abs(found[a] - wanted[b]) for a, b in zip(chosen, targets))
                best = min(best, cost + (len(found) + len(wanted) - 2 * k) * penalty)
    return best


def test_metric_definitions_match_a_direct_computation():
    rng = np.random.default_rng(0)
    frames = torch.tensor(rng.normal(size=(3, 5, 8)), dtype=torch.float32)  # 3 scenes x 5 frames
    scenes = [scene_embedding(f) for f in frames]
    unit = frames / frames.norm(dim=-1, keepdim=True)
    direct = [m.mean(0) / m.mean(0).norm() for m in unit]
    expected = np.mean([float(direct[i] @ direct[j]) for i, j in ((0, 1), (0, 2), (1, 2))]) * 100
    assert visual_consistency(scenes) == pytest.approx(expected, abs=1e-4)
    texts = torch.nn.functional.normalize(torch.tensor(rng.normal(size=(3, 8)), dtype=torch.float32), dim=-1)
    assert semantic_consistency(scenes, texts) == pytest.approx(
        [float(s @ t) * 100 for s, t in zip(direct, texts)], abs=1e-4
    )
    a, b = rng.normal(1.0, 2.0, size=(20000, 1)), rng.normal(3.0, 0.5, size=(20000, 1))
    # Two 1-D Gaussians: (mu1 - mu2)^2 + (s1 - s2)^2
    assert frechet_distance(a, b) == pytest.approx((1.0 - 3.0) ** 2 + (2.0 - 0.5) ** 2, rel=0.05)


def test_identical_scenes_are_maximally_consistent_and_shuffled_prompts_score_lower():
    scene = torch.nn.functional.normalize(torch.randn(8), dim=0)
    assert visual_consistency([scene, scene, scene]) == pytest.approx(100.0, abs=1e-4)
    scenes = [torch.nn.functional.normalize(v, dim=0) for v in torch.eye(4)[:3] + 0.1]
    matching = torch.stack(scenes) + 0.2 * torch.randn(3, 4)
    matching = torch.nn.functional.normalize(matching, dim=-1)
    shuffled = matching[[1, 2, 0]]
    assert np.mean(semantic_consistency(scenes, shuffled)) < np.mean(semantic_consistency(scenes, matching))


def test_fvd_of_a_set_with_itself_is_zero_and_grows_with_noise(backbones):
    i3d = I3DFeatures.load(backbones / "i3d.pt")
    rng = np.random.default_rng(0)
    videos = rng.integers(60, 200, (12, 8, 40, 40, 3)).astype(np.uint8)
    real = i3d.features(videos, size=32)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    distances = []
    for sigma in (10, 40, 80):
        noisy = np.clip(videos + rng.normal(0, sigma, videos.shape), 0, 255).astype(np.uint8)
        distances.append(frechet_distance(real, i3d.features(noisy, size=32)))
    assert distances[0] < distances[1] < distances[2]


def test_fvd_protocol_crops_the_centre_and_needs_16_consecutive_frames():
    from model.feature_extractors import I3DFeatures
    from training.evaluate import first_frames

    class Flatten(torch.nn.Module):  # stands in for I3D: its "features" are the pixels it was given
        def forward(self, clip):
            return clip.flatten(1)

    video = np.zeros((2, 224, 448, 3), np.uint8)
    video[:, :, 112:336] = 255  # a white centre between black sides
    i3d = I3DFeatures(Flatten(), takes_feature_flags=False)
    cropped = i3d.features(video[None], crop=True)
    squashed = i3d.features(video[None], crop=False)
    assert np.allclose(cropped, 1.0)  # only the centre 224x224 is left: all white, scaled to [-1, 1]
    assert squashed.min() == -1.0 and squashed.max() == 1.0  # the sides squashed in
    with pytest.raises(ValueError, match="16 consecutive frames"):
        first_frames(np.zeros((9, 8, 8, 3), np.uint8), 16, "short.mp4")


def test_sca_is_one_for_exact_cuts_and_drops_as_cuts_go_missing_or_are_added():
    expected = scene_boundaries([40, 40, 40])  # three scenes of 40 frames: cuts at 40 and 80
    assert expected == [40, 80]
    exact = shot_cut_accuracy([40, 80], expected, 120)
    assert exact.sca == 1.0 and (exact.matched, exact.missing, exact.extra) == (2, 0, 0)
    late = shot_cut_accuracy([42, 81], expected, 120)
    assert late.sca == pytest.approx(math.exp(-3 / 120)) and late.matched_error == 3
    missing = shot_cut_accuracy([40], expected, 120)
    extra = shot_cut_accuracy([40, 60, 80], expected, 120)
    none = shot_cut_accuracy([], expected, 120)
    assert (missing.missing, extra.extra, none.missing) == (1, 1, 2)
    assert missing.sca == pytest.approx(math.exp(-40 / 120)) and extra.sca == pytest.approx(math.exp(-40 / 120))
    assert 1.0 > late.sca > missing.sca > none.sca > 0
    # A cut far from where it was asked is cheaper as one missing plus one extra than as a match.
    far = shot_cut_accuracy([5], [100], 200, penalty=10)
    assert (far.matched, far.missing, far.extra) == (0, 1, 1) and far.nsd == pytest.approx(20 / 200)


def test_sca_matching_is_the_least_cost_one_to_one_matching():
    rng = np.random.default_rng(0)
    for _ in range(200):
        found = sorted(rng.choice(300, size=rng.integers(0, 5), replace=False).tolist())
        wanted = sorted(rng.choice(300, size=rng.integers(1, 5), replace=False).tolist())
        score = shot_cut_accuracy(found, wanted, 300, penalty=float(rng.integers(5, 80)))
        assert score.nsd * 300 == pytest.approx(brute_force_cost(found, wanted, score.penalty))
        assert score.matched + score.extra == len(found) and score.matched + score.missing == len(wanted)


def test_inter_shot_consistency_uses_only_scenes_that_share_a_character():
    prompts = ["Actor1 (a man) walks.", "Actor2 (a woman) sits.", "Actor1 (a man) meets Actor2 (a woman).", "A street."]
    assert character_pairs(prompts) == [(0, 2), (1, 2)]
    scenes = [np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), np.array([1.0, 1.0, 0]), np.array([0, 0, 1.0])]
    expected = 100 * (1 / math.sqrt(2) + 1 / math.sqrt(2)) / 2
    assert inter_shot_consistency(scenes, prompts) == pytest.approx(expected)
    assert inter_shot_consistency(scenes[:2], prompts[:2]) is None  # nobody appears twice


def test_intra_shot_consistency_is_the_mean_cosine_of_consecutive_frames():
    steady = [np.array([1.0, 0.0])] * 3
    turning = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    assert intra_shot_consistency([steady]) == pytest.approx(100.0)
    assert intra_shot_consistency([steady, turning]) == pytest.approx(100 * (1 + 1 + 0) / 3)
    with pytest.raises(ValueError, match="at least two frames"):
        intra_shot_consistency([[np.array([1.0, 0.0])]])


def test_frechet_distance_matches_the_closed_form_for_diagonal_covariances():
    from scipy.linalg import hadamard

    from model.metrics import frechet_distance

    # Columns of a Hadamard matrix (but the all-ones one) are orthogonal and zero-mean: the sample
    # covariance of such features is exactly diagonal, where FD has a closed form.
    signs = hadamard(8)[:, 1:4].astype(np.float64)  # 8 samples, 3 features
    scale_a, scale_b = np.array([1.0, 2.0, 0.5]), np.array([3.0, 0.25, 1.0])
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.5, -1.0, 0.0])
    a, b = mean_a + signs * scale_a, mean_b + signs * scale_b
    var_a, var_b = np.var(a, axis=0, ddof=1), np.var(b, axis=0, ddof=1)
    closed = np.sum((mean_a - mean_b) ** 2) + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert frechet_distance(a, b) == pytest.approx(closed, rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_the_evaluation_set_has_50_stories_in_the_papers_structure():
    import re
    from pathlib import Path

    from model.prompts import load_prompts

    path = Path(__file__).resolve().parents[2] / "training" / "eval_prompts.json"
    stories = json.loads(path.read_text())
    assert len(stories) == 50 and len({s["id"] for s in stories}) == 50
    assert [s["id"] for s in stories[:10]] == ["cafe", "harbour", "library", "kitchen", "desert", "office", "forest",
                                               "station", "studio", "snow"]  # the first ten are kept  # fmt: skip
    descriptions = []
    for story in stories:
        assert story["background"].strip() and 1 <= len(story["characters"]) <= 2, story["id"]
        assert len(story["scenes"]) == 3 and len(set(story["scenes"])) == 3, story["id"]  # scenes differ
        named = {c["name"]: c["description"] for c in story["characters"]}
        assert list(named) == [f"Actor{i + 1}" for i in range(len(named))], story["id"]
        for scene in story["scenes"]:
            mentioned = set(re.findall(r"\bActor\d+\b", scene))
            assert mentioned and mentioned <= set(named), (story["id"], scene)
            for name in mentioned:  # every mention carries the full description
                assert scene.count(f"{name} ({named[name]})") == len(re.findall(rf"\b{name}\b", scene)), scene
        assert all(any(name in scene for scene in story["scenes"]) for name in named), story["id"]
        descriptions += list(named.values())
        assert len(load_prompts(path, story["id"])) == 3  # what generate reads
    assert len(descriptions) == len(set(descriptions))  # no two stories share a character


def test_boundary_matches_pair_one_to_one_within_the_tolerance():
    from model.metrics import BoundaryScore, boundary_matches

    assert boundary_matches([10, 52, 99], [10, 50, 100], tolerance=2) == (3, 0, 0)
    assert boundary_matches([10, 53], [10, 50], tolerance=2) == (1, 1, 1)
    # Two detections next to one true cut: one matches, the other is extra.
    assert boundary_matches([49, 51], [50], tolerance=2) == (1, 1, 0)
    # The earliest-first pairing keeps both matches where a careless one would pair 50 with 49.
    assert boundary_matches([49, 52], [50, 54], tolerance=2) == (2, 0, 0)
    score = BoundaryScore.of(*boundary_matches([10, 30, 70], [10, 50, 70, 90]))
    assert (score.precision, score.recall) == (2 / 3, 2 / 4) and score.f1 == pytest.approx(4 / 7)
    assert BoundaryScore.of(0, 0, 0).f1 == 1.0
