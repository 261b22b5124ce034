"""Fidelity to the official Mask²DiT and ViCLIP code: RoPE positions, expansion guidance, the
training recipe, ViCLIP text and preprocessing, and importing the official datasets."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from manifests import read_table
from manifests.__main__ import main as manifests_main
from manifests.frames import max_stride_window
from manifests.importer import ImportFormatError, import_dataset
from model.clip_tokenizer import ClipBPETokenizer, byte_symbols
from model.transformer import Mask2DiTTransformer3DModel
from model.viclip import MEAN, STD, preprocess_frames, viclip_frame_indices
from training.config import DataConfig, load_config
from training.data import PRETRAIN_KEEP, draw_windows, load_samples, official_window
from training.engine import warmup_then_constant

REPO = Path(__file__).resolve().parent.parent

# --- 1. RoPE positions ------------------------------------------------------------------------


def rope_by_formula(head_dim, times, rows, cols, theta=10000.0):
    """CogVideoX 3D RoPE written out from its definition: per axis, angle = position * theta^(-2k/d),
    each frequency used for two adjacent channels; channels ordered [time | rows | cols]."""

    def axis(dim, positions):
        freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64)[: dim // 2] / dim)
        angles = torch.outer(torch.as_tensor(positions, dtype=torch.float64), freqs).repeat_interleave(2, dim=1)
        return angles.cos(), angles.sin()

    dims = (head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3)
    t, h, w = axis(dims[0], times), axis(dims[1], rows), axis(dims[2], cols)
    out = []
    for part in (0, 1):
        grid = torch.cat([t[part][:, None, None].expand(-1, len(rows), len(cols), -1),
                          h[part][None, :, None].expand(len(times), -1, len(cols), -1),
                          w[part][None, None].expand(len(times), len(rows), -1, -1)], dim=-1)  # fmt: skip
        out.append(grid.reshape(-1, sum(dims)).float())
    return out


def crop_region(grid_h, grid_w, base_h, base_w):
    """The official resize-crop region of a (grid_h, grid_w) grid inside the (base_h, base_w) grid."""
    if grid_h / grid_w > base_h / base_w:
        height, width = base_h, int(round(base_h / grid_h * grid_w))
    else:
        width, height = base_w, int(round(base_w / grid_w * grid_h))
    top, left = int(round((base_h - height) / 2.0)), int(round((base_w - width) / 2.0))
    return top, left, top + height, left + width


@pytest.mark.parametrize("pixels", [(480, 720), (480, 480), (720, 480), (256, 384)], ids=lambda p: f"{p[0]}x{p[1]}")
@pytest.mark.parametrize("scheme", ["consecutive", "per_scene"])
def test_rope_positions_follow_the_official_grid_at_every_resolution(pixels, scheme):
    model = Mask2DiTTransformer3DModel(num_attention_heads=1, attention_head_dim=64, num_layers=1, in_channels=4,
                                       out_channels=4, text_embed_dim=8, time_embed_dim=8, sample_height=60,
                                       sample_width=90, use_rotary_positional_embeddings=True,
                                       position_scheme=scheme)  # fmt: skip
    latent_h, latent_w = pixels[0] // 8, pixels[1] // 8
    grid_h, grid_w = latent_h // 2, latent_w // 2
    top, left, bottom, right = crop_region(grid_h, grid_w, 30, 45)
    rows = [top + i * (bottom - top) / grid_h for i in range(grid_h)]
    cols = [left + i * (right - left) / grid_w for i in range(grid_w)]
    frames = [3, 2]
    times = list(range(5)) if scheme == "consecutive" else [0, 1, 2, 0, 1]
    cos, sin = model.prepare_rotary_emb(frames, latent_h, latent_w)
    expected_cos, expected_sin = rope_by_formula(64, times, rows, cols)
    torch.testing.assert_close(cos, expected_cos, atol=2e-6, rtol=0)
    torch.testing.assert_close(sin, expected_sin, atol=2e-6, rtol=0)


# --- 2. Expansion guidance and video context -----------------------------------------------


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from model.pipeline import Mask2DiTPipeline
    from model.tiny import build_tiny_model

    pipe = Mask2DiTPipeline.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def spy_negatives(pipe, monkeypatch) -> list[list[str]]:
    seen = []
    original = pipe.encode_scenes

    def encode_scenes(prompts, negative_prompts, guidance, device, dtype, *rest):
        seen.append(list(negative_prompts))
        return original(prompts, negative_prompts, guidance, device, dtype, *rest)

    monkeypatch.setattr(pipe, "encode_scenes", encode_scenes)
    return seen


def test_expansion_gives_every_scene_the_negative_prompt(pipe, monkeypatch):
    from model.tiny import TINY_SIZE

    kwargs = dict(num_inference_steps=1, seed=3, output_type="latent", **TINY_SIZE)
    base = pipe(["a man walks", "a woman sits"], negative_prompts="blurry", **kwargs)
    assert base.negative_prompts == ["blurry", "blurry"]
    seen = spy_negatives(pipe, monkeypatch)
    pipe.expand(base, ["a dog runs"], negative_prompts="low quality", **kwargs)
    assert seen[-1] == ["low quality"] * 3  # context scenes too, as the official unconditional branch
    # Per-scene negatives: context scenes keep the ones they were generated with.
    story = pipe.expand(base, ["a dog runs", "a cat sits"], negative_prompts=["dark", "noisy"], **kwargs)
    assert seen[-2:] == [["blurry", "blurry", "dark"], ["blurry", "dark", "noisy"]]
    assert story.negative_prompts == ["blurry", "blurry", "dark", "noisy"]


def test_context_from_video_is_noised_at_t0_like_the_official_pipeline(pipe):
    frames = np.random.default_rng(0).integers(0, 255, (9, 32, 32, 3), dtype=np.uint8)
    latents = pipe.encode_video(frames, seed=5)
    torch.testing.assert_close(latents, pipe.encode_video(frames, seed=5), atol=0, rtol=0)  # seeded
    generator = torch.Generator().manual_seed(5)
    video = torch.from_numpy(frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
    clean = pipe.vae.encode(video).latent_dist.sample(generator=generator) * pipe.vae.config.scaling_factor
    clean = clean.permute(0, 2, 1, 3, 4)
    noise = torch.randn(clean.shape, generator=generator)
    alpha = pipe.scheduler.alphas_cumprod[0]
    torch.testing.assert_close(latents, alpha.sqrt() * clean + (1 - alpha).sqrt() * noise)
    assert not torch.equal(latents, clean)


def test_context_video_frames_use_the_largest_stride_that_fits(tmp_path):
    from curation.samples import write_synthetic_video
    from model.generate import read_video

    video = write_synthetic_video(tmp_path / "ctx.mp4", [40], fps=24.0, size=(64, 48), seed=3).path
    frames = read_video(video, 9, 32, 32, seed=1)
    assert frames.shape == (9, 32, 32, 3)
    rng = np.random.default_rng(0)
    assert max_stride_window(40, 9, 3, rng)[1] == 3 and max_stride_window(20, 9, 3, rng)[1] == 2
    assert max_stride_window(8, 9, 3, rng) is None
    starts = {max_stride_window(40, 9, 3, np.random.default_rng(s))[0] for s in range(200)}
    assert starts == set(range(40 - 24))  # every start that fits, and only those


# --- 3. The official training recipe ---------------------------------------------------------


@pytest.mark.parametrize("name", ["pretrain.yaml", "sft.yaml"])
def test_shipped_configs_reproduce_the_official_launchers(name):
    config = load_config(REPO / "training" / "configs" / name)
    optim = config.optim
    assert (optim.lr, optim.betas, optim.weight_decay, optim.eps, optim.max_grad_norm, optim.warmup_steps) == (
        1e-5, (0.9, 0.999), 3e-2, 1e-10, 0.05, 100)  # fmt: skip
    assert config.data.caption_dropout == 0.0 and config.data.max_stride == 3 and config.data.frame_window == "official"
    assert config.objective.cond_prob == (0.5 if config.data.stage == "sft" else 0.0)


def test_learning_rate_warms_up_linearly_then_stays_constant():
    assert [warmup_then_constant(100, s) for s in (0, 50, 100, 5000)] == [0.0, 0.5, 1.0, 1.0]
    assert warmup_then_constant(0, 0) == 1.0


def data_config(stage, **extra):
    return DataConfig(manifest=Path("unused"), stage=stage, num_frames=49, **extra)


def test_pretrain_windows_are_stride_3_inside_5_to_95_percent_with_random_starts():
    config = data_config("pretrain")
    frames = 300
    end = int(PRETRAIN_KEEP[1] * frames)
    starts = set()
    for seed in range(300):
        start, stride = official_window(frames, config, np.random.default_rng(seed))
        assert stride == 3 and start >= int(PRETRAIN_KEEP[0] * end) and start + 48 * 3 < end
        starts.add(start)
    assert len(starts) > 50  # random, not a fixed window
    # Too short for stride 3 inside the window: the largest stride that fits the shot.
    assert official_window(120, config, np.random.default_rng(0))[1] == 2


def test_sft_windows_take_the_largest_stride_that_fits():
    config = data_config("sft")
    for frames, stride in ((400, 3), (145, 3), (144, 2), (97, 2), (96, 1), (49, 1)):
        start, got = official_window(frames, config, np.random.default_rng(frames))
        assert got == stride and 0 <= start <= frames - 1 - 48 * stride
    assert official_window(48, config, np.random.default_rng(0)) is None


def test_windows_are_a_pure_function_of_seed_and_sample_index():
    from training.data import Scene

    config = data_config("sft")
    scenes = [
        Scene({"num_frames": 300, "shot_id": "a"}, "", 0, 1),
        Scene({"num_frames": 200, "shot_id": "b"}, "", 0, 1),
    ]
    first = draw_windows(scenes, config, seed=42, index=7)
    assert first == draw_windows(scenes, config, seed=42, index=7)
    assert first != draw_windows(scenes, config, seed=42, index=8)
    middle = data_config("sft", frame_window="middle")
    assert draw_windows(scenes, middle, seed=42, index=7) == scenes


def test_precomputed_latents_need_the_fixed_middle_window(tmp_path):
    config = REPO / "training" / "configs" / "sft.yaml"
    with pytest.raises(ValueError, match="frame_window=middle"):
        load_config(config, [f"data.precomputed={tmp_path}"])
    assert load_config(config, [f"data.precomputed={tmp_path}", "data.frame_window=middle"]).data.precomputed


# --- 5. ViCLIP text and preprocessing ----------------------------------------------------------


def merge_word(word: list[str], pair: tuple[str, str]) -> list[str]:
    """Every occurrence of `pair` in `word` merged, left to right (one BPE merge step)."""
    out, j = [], 0
    while j < len(word):
        if j + 1 < len(word) and (word[j], word[j + 1]) == pair:
            out.append(word[j] + word[j + 1])
            j += 2
        else:
            out.append(word[j])
            j += 1
    return out


class OracleBPE:
    """CLIP's BPE written out from its definition, as the test's reference: byte symbols in CLIP's
    order, repeated lowest-rank pair merges, the official vocabulary numbering."""

    def __init__(self, lines):
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        base = list(byte_symbols().values())
        vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
        self.ids = dict(zip(vocab, range(len(vocab))))
        self.ranks = {m: i for i, m in enumerate(merges)}

    def bpe(self, word):
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            rank, i = min((self.ranks.get(p, float("inf")), i) for i, p in enumerate(zip(parts, parts[1:])))
            if rank == float("inf"):
                break
            parts = merge_word(parts, (parts[i], parts[i + 1]))
        return parts

    def encode(self, text):
        import html

        import ftfy
        import regex

        text = regex.sub(r"\s+", " ", html.unescape(html.unescape(ftfy.fix_text(text))).strip()).strip().lower()
        pattern = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
        ids = []
        for word in regex.findall(pattern, text, regex.IGNORECASE):
            if word in ("<|startoftext|>", "<|endoftext|>"):
                ids.append(self.ids[word])
                continue
            symbols = "".join(byte_symbols()[b] for b in word.encode("utf-8"))
            ids += [self.ids[p] for p in self.bpe(symbols)]
        return ids


@pytest.fixture(scope="module")
def merges_file(tmp_path_factory):
    """A merges file learnt greedily from a small corpus, so real multi-step merges happen."""
    corpus = ("the man walks into the bar and the woman walks out . actor1 ( a tall man in a grey coat ) "
              "sits ; she laughs , he orders two drinks at 9 pm") * 3  # fmt: skip
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in corpus.split()]
    merges = []
    for _ in range(60):
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(best)
        words = [merge_word(w, best) for w in words]
    path = tmp_path_factory.mktemp("bpe") / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return path


TEXTS = [
    "The man walks into the bar.",
    "Actor1 (a tall man in a grey coat) sits; she LAUGHS & he orders 2 drinks at 9pm!",
    "  café   naïve — “quoted” text &amp; HTML  ",
    "the man <|endoftext|> walks",
    "emoji 🎬 and 中文 characters",
    "",
]


def test_tokenizer_numbers_tokens_as_the_official_one(merges_file):
    tokenizer = ClipBPETokenizer(merges_file)
    oracle = OracleBPE(gzip.open(merges_file, "rt", encoding="utf-8").read().split("\n"))
    assert tokenizer.encoder == oracle.ids
    assert tokenizer.encoder["a</w>"] == 320 and tokenizer.encoder["!"] == 0  # printable bytes first
    for text in TEXTS:
        assert tokenizer.encode(text) == oracle.encode(text), text
    # A literal <|endoftext|> is the EOT token, so the text tower pools there (argmax), as officially.
    tokens, _ = tokenizer.encode_batch(["the man <|endoftext|> walks"], 16)
    assert int(tokens[0].argmax()) == 3


def test_viclip_frames_are_picked_and_resized_as_the_official_demo():
    import cv2

    assert viclip_frame_indices(80) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert viclip_frame_indices(83) == [0, 10, 20, 30, 40, 50, 60, 70]
    assert viclip_frame_indices(5) == [0, 0, 1, 1, 2, 3, 3, 4]
    frames = np.random.default_rng(0).integers(0, 255, (8, 180, 320, 3), dtype=np.uint8)  # 320x180 input
    ours = preprocess_frames(frames)
    expected = []
    for frame in frames:
        bgr = np.ascontiguousarray(frame[:, :, ::-1])  # the demo reads BGR with OpenCV, then flips
        resized = cv2.resize(bgr[:, :, ::-1], (224, 224))
        expected.append((resized / 255.0 - np.array(MEAN)) / np.array(STD))
    expected = torch.from_numpy(np.stack(expected).transpose(0, 3, 1, 2)).float()
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


# --- 4. Importing the official datasets --------------------------------------------------------


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    from curation.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("official")
    for i, frames in enumerate([70, 60, 80, 65]):
        write_synthetic_video(root / "clips" / f"{i}.mp4", [frames], fps=24.0, size=(64, 48), seed=10 + i)
    (root / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    return root


def write_pretrain_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fps", "width", "height", "caption", "path", "num_frame"])
        writer.writerows(rows)


def test_official_pretrain_csv_imports_and_trains(clip_files, tmp_path):
    source = tmp_path / "pretrain.csv"
    write_pretrain_csv(source, [
        [24.0, 64, 48, "a red square moves", "clips/0.mp4", 70],
        [24.0, 64, 48, "a blue circle turns", "clips/1.mp4", 60],
        [24.0, 64, 48, "missing clip", "clips/nope.mp4", 50],
        [24.0, 64, 48, "a broken clip", "clips/broken.mp4", 50],
        [24.0, 64, 48, "", "clips/2.mp4", 80],
        [24.0, 64, 48, "a green bar", "clips/3.mp4", 65],
    ])  # fmt: skip
    out = tmp_path / "manifest"
    result = import_dataset(source, out, root=clip_files)
    assert result.format == "pretrain-csv" and result.shots == 3
    assert {f["where"] for f in result.failures} == {"line 4", "line 5", "line 6"}
    shots = read_table(out, "shots")
    assert sorted(shots["num_frames"]) == [60, 65, 70] and (shots["start_frame"] == 0).all()
    captions = read_table(out, "shot_captions").merge(shots[["shot_id", "source_path"]], on="shot_id")
    by_file = {Path(p).name: c for p, c in zip(captions["source_path"], captions["caption"])}
    assert by_file == {"0.mp4": "a red square moves", "1.mp4": "a blue circle turns", "3.mp4": "a green bar"}
    videos = read_table(out, "videos")
    failed = videos[videos["status"] == "failed"]
    assert len(failed) == 3 and all("pretrain.csv line" in e for e in failed["error"])
    assert any("file not found" in e for e in failed["error"])
    # Re-running gives the same manifest.
    before = {t: read_table(out, t) for t in ("videos", "shots", "shot_captions")}
    import_dataset(source, out, root=clip_files)
    for name, table in before.items():
        pd.testing.assert_frame_equal(read_table(out, name), table)
    # Training reads it with no other step.
    samples, report = load_samples(DataConfig(manifest=out, stage="pretrain", num_frames=9))
    assert report.usable == 3 and {s[0].caption for s in samples} == set(by_file.values())


def test_official_sft_json_imports_as_consecutive_windows(clip_files, tmp_path):
    source = tmp_path / "sft.json"
    story = [{"vid": f"shot{i}", "width": 64, "height": 48, "duration": 3.0, "fps": 24.0,
              "url": f"clips/{i}.mp4", "caption": f"caption {i}"} for i in range(4)]  # fmt: skip
    short = [{"url": "clips/0.mp4", "caption": "only one"}]
    source.write_text(json.dumps([{"prefix": "story", "values": story}, {"prefix": "short", "values": short},
                                  {"prefix": "broken"}]))  # fmt: skip
    out = tmp_path / "manifest"
    assert manifests_main(["import", str(source), "--root", str(clip_files), "--output", str(out)]) == 0
    combos = read_table(out, "combinations")
    shots = read_table(out, "shots").set_index("shot_id")
    order = [[Path(shots.loc[s, "source_path"]).name for s in ids] for ids in combos["shot_ids"]]
    assert sorted(order) == [["0.mp4", "1.mp4", "2.mp4"], ["1.mp4", "2.mp4", "3.mp4"]]
    notes = read_table(out, "annotations")
    assert sorted(map(list, notes["captions"])) == [["caption 0", "caption 1", "caption 2"],
                                                    ["caption 1", "caption 2", "caption 3"]]  # fmt: skip
    record = json.loads((out / "import.json").read_text())
    assert {f["where"] for f in record["failures"]} == {"entry 1", "entry 2"}
    samples, report = load_samples(DataConfig(manifest=out, stage="sft", num_frames=9, scenes=3))
    assert report.usable == 2 and [s.caption for s in samples[0]] in (["caption 0", "caption 1", "caption 2"],
                                                                      ["caption 1", "caption 2", "caption 3"])  # fmt: skip


def test_plain_path_caption_csv_and_wrong_columns(clip_files, tmp_path, capsys):
    plain = tmp_path / "openvid.csv"
    plain.write_text(f"path,caption\n{clip_files}/clips/0.mp4,a clip\n")
    assert import_dataset(plain, tmp_path / "m").format == "plain-csv"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,text\na.mp4,hello\n")
    with pytest.raises(ImportFormatError, match="path,caption"):
        import_dataset(wrong, tmp_path / "m2")
    assert manifests_main(["import", str(wrong), "--output", str(tmp_path / "m3")]) == 2
    assert "neither the official pretrain CSV" in capsys.readouterr().err


def test_given_initial_noise_replaces_the_per_scene_seeds(pipe):
    from model.tiny import TINY_SIZE

    kwargs = dict(num_inference_steps=1, output_type="latent", **TINY_SIZE)
    seeded = pipe(["a man walks", "a woman sits"], seed=3, **kwargs)
    noise = torch.cat([pipe.scene_noise(s, 3, 32, 32, "cpu", torch.float32) for s in (3, 4)], dim=1)
    given = pipe(["a man walks", "a woman sits"], latents=noise / pipe.scheduler.init_noise_sigma, **kwargs)
    torch.testing.assert_close(given.latents, seeded.latents)
    with pytest.raises(ValueError, match="this call needs"):
        pipe(["a man walks"], latents=noise, **kwargs)
