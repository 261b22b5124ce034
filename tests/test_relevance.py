"""Shot relevance: ViCLIP loading and preprocessing, the combination miner, and the job's new stages."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from curation.combine import calibrate, mine, mine_group
from curation.config import CombineConfig
from manifests import read_table
from manifests.frames import sample_indices
from model.clip_tokenizer import ClipBPETokenizer
from model.viclip import (
    MEAN,
    STD,
    VICLIP_B16,
    VICLIP_L14,
    ViCLIP,
    ViCLIPConfig,
    _key_mismatch,
    config_from_state_dict,
    preprocess_frames,
)
from model.weights import CheckpointError
from tests.conftest import CLIP_MINUTES

TINY = ViCLIPConfig(image_size=32, patch_size=8, num_frames=8, vision_width=64, vision_layers=2, vision_heads=64 // 64,
                    embed_dim=32, text_width=64, text_layers=2, text_heads=1, context_length=8, vocab_size=525)  # fmt: skip


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    merges = [
        "#version: 0.2",
        "t h",
        "th e</w>",
        "a n",
        "an d</w>",
        "m a",
        "ma n</w>",
        "w a",
        "l k",
        "wa lk",
        "walk s</w>",
    ]
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(merges) + "\n")
    return path


def test_bpe_tokenizer_merges_and_truncates_with_eot_last(bpe_file):
    tokenizer = ClipBPETokenizer(bpe_file)
    # 512 byte symbols, 10 merges, the file's trailing blank line (an id, as officially), 2 specials
    assert len(tokenizer) == 512 + 10 + 1 + 2 == TINY.vocab_size
    ids = tokenizer.encode("The man WALKS")
    assert ids == [tokenizer.encoder[t] for t in ("the</w>", "man</w>", "walks</w>")]
    tokens, truncated = tokenizer.encode_batch(["the man", "the man walks and the man walks and the man"], 8)
    assert truncated == [False, True]
    assert tokens[0].tolist()[:4] == [tokenizer.sot, ids[0], ids[1], tokenizer.eot] and tokens[0, 4:].eq(0).all()
    assert tokens[1, -1] == tokenizer.eot and tokens[1].argmax() == 7


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tiny_viclip_round_trips_through_the_strict_loader(tmp_path, bpe_file, suffix):
    torch.manual_seed(0)
    model = ViCLIP(TINY).eval()
    path = tmp_path / f"viclip{suffix}"
    model.save_checkpoint(path)
    loaded = ViCLIP.from_checkpoint(path, tokenizer=bpe_file)
    assert loaded.config == TINY and loaded.checkpoint_hash
    video = preprocess_frames(np.random.default_rng(0).integers(0, 255, (8, 40, 50, 3), dtype=np.uint8), 32)[None]
    torch.testing.assert_close(loaded.video_embeddings(video), model.video_embeddings(video))
    first, _ = loaded.text_embeddings(["the man walks"])
    second, truncated = loaded.text_embeddings(["the man walks", "the man walks and the man walks and the man"])
    torch.testing.assert_close(first[0], second[0])  # deterministic, batch-independent
    assert truncated == [False, True]
    assert torch.allclose(loaded.video_embeddings(video).norm(dim=-1), torch.ones(1))


def test_official_layout_without_stored_config_is_inferred(tmp_path):
    """An official-style file ({'model': state_dict}, nothing else) loads by its tensor shapes."""
    torch.manual_seed(0)
    model = ViCLIP(VICLIP_B16).to(torch.float16)  # full-size ViT-B/16 towers, random weights
    torch.save({"model": model.state_dict()}, tmp_path / "ViClip-B16.pth")
    loaded = ViCLIP.from_checkpoint(tmp_path / "ViClip-B16.pth")
    assert loaded.config == VICLIP_B16
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.float(), b.float()), name


def test_full_size_l14_has_the_official_key_layout():
    with torch.device("meta"):
        model = ViCLIP(VICLIP_L14)
    state = model.state_dict()
    assert config_from_state_dict(state, "meta") == VICLIP_L14
    expected = {
        "temp": (),
        "vision_encoder.conv1.weight": (1024, 3, 1, 14, 14),
        "vision_encoder.positional_embedding": (257, 1024),
        "vision_encoder.temporal_positional_embedding": (1, 8, 1024),
        "vision_encoder.transformer.resblocks.23.attn.in_proj_weight": (3072, 1024),
        "vision_encoder.transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024),
        "vision_encoder.proj": (1024, 768),
        "text_encoder.token_embedding.weight": (49408, 768),
        "text_encoder.positional_embedding": (32, 768),
        "text_encoder.transformer.resblocks.11.attn.out_proj.weight": (768, 768),
        "text_encoder.ln_final.weight": (768,),
        "text_encoder.text_projection": (768, 768),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert not any("causal_mask" in k for k in state)  # a buffer, not a checkpoint key


def test_wrong_or_missing_keys_are_clear_errors(tmp_path):
    state = ViCLIP(TINY).state_dict()
    missing = dict(state)
    missing.pop("vision_encoder.ln_post.weight")
    torch.save({"model": missing, "config": TINY.__dict__}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match="1 missing keys.*ln_post"):
        ViCLIP.from_checkpoint(tmp_path / "missing.pth")
    renamed = {k.replace("vision_encoder.", "visual."): v for k, v in state.items()}
    torch.save({"model": renamed}, tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="not a ViCLIP checkpoint"):
        ViCLIP.from_checkpoint(tmp_path / "renamed.pth")
    with pytest.raises(CheckpointError, match="not found"):
        ViCLIP.from_checkpoint(tmp_path / "nope.pth")
    assert _key_mismatch(ViCLIP(TINY), state) == ([], [])


def test_preprocessing_shape_and_normalisation():
    frames = np.full((8, 90, 160, 3), 255, dtype=np.uint8)
    frames[:, :, :, 1] = 0
    video = preprocess_frames(frames)
    assert video.shape == (8, 3, 224, 224)
    expected = [(1 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (1 - MEAN[2]) / STD[2]]
    torch.testing.assert_close(video.mean(dim=(0, 2, 3)), torch.tensor(expected), atol=1e-4, rtol=0)
    assert sample_indices(80) == [5, 15, 25, 35, 45, 55, 65, 75]


def clustered_embeddings(seed=0):
    """9 shots in time order: 0,2,4 show one scene; 1,3,5 another; 6 repeats shot 0; 7,8 are unrelated."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=16), rng.normal(size=16)
    vectors = [a + 0.3 * rng.normal(size=16) if i in (0, 2, 4) else b + 0.3 * rng.normal(size=16) for i in range(6)]
    vectors += [vectors[0] + 0.01 * rng.normal(size=16), rng.normal(size=16), rng.normal(size=16)]
    matrix = np.stack(vectors).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


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


@pytest.mark.slow
def test_job_embeds_shots_and_writes_combinations(ray_local, tmp_path, multi_shot_video):
    from curation.run import main

    out = tmp_path / "out"
    args = ["--input", str(multi_shot_video.path), "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}",
            "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    assert main(args) == 0
    embeddings = read_table(out, "shot_embeddings")
    shots = read_table(out, "shots")
    assert set(embeddings["shot_id"]) == set(shots.loc[shots["status"] == "ok", "shot_id"])
    assert {len(e) for e in embeddings["embedding"]} == {176} and (embeddings["embedder"] == "color-layout").all()
    combos = read_table(out, "combinations")
    long_shots = shots[shots["num_frames"] >= 49].sort_values("start_frame")["shot_id"].tolist()
    assert [list(c) for c in combos["shot_ids"]] == [long_shots]  # the only 3 shots of >= 49 frames, in order
    record = json.loads((out / "run.json").read_text())
    assert "weight-free" in record["relevance"]["embedding"]["fidelity"]
    # A re-run embeds nothing again and writes the same combinations.
    assert main(args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["relevance"]["embedding"]["videos_embedded"] == 0
    assert read_table(out, "combinations")["combination_id"].tolist() == combos["combination_id"].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("embedder", ["viclip", "clip"])
def test_job_runs_with_checkpoint_embedders(ray_local, tmp_path, multi_shot_video, embedder):
    """The job's embedding actors load a local checkpoint (tiny, random) through the real loaders."""
    from curation.run import main

    if embedder == "viclip":
        checkpoint = tmp_path / "viclip.pth"
        ViCLIP(TINY).save_checkpoint(checkpoint)
    else:
        from transformers import CLIPConfig, CLIPModel

        checkpoint = tmp_path / "clip"
        CLIPModel(CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, vocab_size=64),
                             vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                num_attention_heads=2, image_size=32, patch_size=8),
                             projection_dim=16)).save_pretrained(checkpoint)  # fmt: skip
    out = tmp_path / "out"
    assert main(["--input", str(multi_shot_video.path), "--output", str(out), "--embedder", embedder,
                 f"--{embedder}-checkpoint", str(checkpoint), "--within", "video", "--min-relevance", "-10"]) == 0  # fmt: skip
    embeddings = read_table(out, "shot_embeddings")
    dim = TINY.embed_dim if embedder == "viclip" else 16
    assert len(embeddings) == 3 and {len(e) for e in embeddings["embedding"]} == {dim}
    assert embeddings["checkpoint_hash"].notna().all() and embeddings["embedder"].iloc[0].startswith(embedder)
    assert len(read_table(out, "combinations")) == 1


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
