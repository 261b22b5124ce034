"""Tests of `model/vl_captioner.py`: a Qwen-VL folder loaded for captioning, its video patches, its
prompts and its schema-held generation, on tiny random folders built in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from curation.captions import CaptionReply, reply_schema
from model.tiny import build_tiny_captioner
from model.vl_captioner import (
    Request,
    VideoSpec,
    expand_videos,
    folder_digest,
    load_vl_model,
    model_family,
    video_patches,
)
from model.weights import CheckpointError
from tests.support.captioner import ForceReply, valid_reply


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def tiny_captioner(request, tmp_path_factory):
    return build_tiny_captioner(tmp_path_factory.mktemp(request.param), request.param)


def chat(num_shots: int) -> list[dict]:
    parts = []
    for i in range(num_shots):
        parts += [{"type": "text", "text": f"Shot {i + 1} of {num_shots} (2.0 s):"}, {"type": "video", "video": i}]
    return [{"role": "system", "content": "Describe the shots."}, {"role": "user", "content": parts}]


def frames(count: int, seed: int, height: int = 90, width: int = 160) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def test_two_identical_frames_are_the_image_processors_patches():
    """An independent oracle: transformers' own Qwen2-VL image processor repeats an image over the
    temporal patch, so a video of two equal frames must give exactly its pixel values and grid."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    spec = VideoSpec.from_folder(Path("/nonexistent"), "qwen2_5_vl")
    image = frames(1, 0, 100, 180)[0]
    oracle = Qwen2VLImageProcessorPil(size={"shortest_edge": spec.min_pixels, "longest_edge": 200 * 300})(
        images=[image], return_tensors="np"
    )
    ours = video_patches(np.stack([image, image]), fps=2.0, spec=spec, max_pixels=200 * 300)
    assert list(ours.grid) == oracle["image_grid_thw"][0].tolist()
    np.testing.assert_allclose(ours.pixels, oracle["pixel_values"], atol=1e-5)


def test_a_video_is_cut_into_whole_temporal_patches_with_their_times():
    spec = VideoSpec.from_folder(Path("/nonexistent"), "qwen3_vl")
    video = video_patches(frames(5, 1, 360, 640), fps=4.0, spec=spec, max_pixels=200_000)
    t, h, w = video.grid
    assert t == 3  # five frames, the last repeated to fill the third patch
    assert video.pixels.shape == (t * h * w, 3 * 2 * 16 * 16)
    assert video.times == [0.125, 0.625, 1.0]  # the middle of each pair; the padded pair is the last frame
    assert video.seconds_per_patch == 0.5
    assert h * 16 * w * 16 <= 200_000 and h % 2 == 0 and w % 2 == 0  # the pixel budget, whole merges
    assert abs(w / h - 640 / 360) < 0.15  # the aspect ratio, as closely as whole patches allow


def test_placeholders_grow_to_one_pad_per_merged_patch():
    spec = VideoSpec.from_folder(Path("/nonexistent"), "qwen2_5_vl")
    videos = [video_patches(frames(4, s), 2.0, spec, 56 * 56 * 4) for s in (0, 1)]
    text = "a<|vision_start|><|video_pad|><|vision_end|>b<|vision_start|><|video_pad|><|vision_end|>c"
    grown = expand_videos(text, "qwen2_5_vl", videos, 2)
    assert grown.count("<|video_pad|>") == sum(int(np.prod(v.grid)) // 4 for v in videos)
    qwen3 = expand_videos(text, "qwen3_vl", videos, 2)
    assert qwen3.count("<|vision_start|>") == sum(v.grid[0] for v in videos)  # one block per temporal patch
    assert "<0.2 seconds>" in qwen3 or "<0.3 seconds>" in qwen3
    with pytest.raises(ValueError, match="2 videos"):
        expand_videos("no placeholder", "qwen2_5_vl", videos, 2)


def test_a_forced_reply_comes_back_word_for_word_from_a_batch(tiny_captioner):
    """The real generate path (left-padded batch, videos, grammar) with a processor that forces a
    valid reply: each row returns exactly it, finished, with its token counts."""
    model = load_vl_model(tiny_captioner)
    requests = [Request(chat(2), [frames(3, 0), frames(5, 1)], fps=4.0), Request(chat(1), [frames(2, 2)], fps=4.0)]
    force = ForceReply(tiny_captioner)
    replies = [model.generate([r], reply_schema(n), 400, logits_processors=[ForceReply(tiny_captioner)])[0]
               for r, n in zip(requests, (2, 1))]  # fmt: skip
    assert [r.text for r in replies] == [valid_reply(2), valid_reply(1)]
    assert all(r.finished and r.output_tokens > 10 and r.prompt_tokens > 20 for r in replies)
    batched = model.generate(requests[:1] * 2, reply_schema(2), 400, logits_processors=[force])
    assert [r.text for r in batched] == [valid_reply(2)] * 2


def test_the_grammar_holds_a_random_model_to_the_schema(tiny_captioner):
    """Random weights write random text, but never outside the grammar: every finished reply parses
    with exactly the asked number of shots, and an unfinished one is a prefix of such a document."""
    model = load_vl_model(tiny_captioner)
    replies = model.generate([Request(chat(2), [frames(2, 3), frames(2, 4)])] * 3, reply_schema(2), 60,
                             temperature=1.0, seed=3)  # fmt: skip
    for reply in replies:
        assert reply.text.startswith('{"characters": [')
        if reply.finished:
            assert len(CaptionReply.model_validate_json(reply.text).shots) == 2
        else:
            assert reply.output_tokens == 60


def test_a_folder_that_is_not_a_captioner_is_refused_by_name(tmp_path, tiny_captioner):
    with pytest.raises(CheckpointError, match="no config.json"):
        model_family(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(CheckpointError, match="'llama' is not a supported captioner"):
        model_family(tmp_path)
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_captioner, pickled)
    for weights in pickled.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(CheckpointError, match="no \\*.safetensors"):
        load_vl_model(pickled)


def test_the_folder_digest_follows_the_weights_and_reads_an_unchanged_folder_once(tmp_path, tiny_captioner):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_captioner, copy)
    memo: dict = {}
    first = folder_digest(copy, memo)
    assert folder_digest(copy, memo) == first and len(memo) == len([p for p in copy.iterdir() if p.is_file()])
    weights = next(copy.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert folder_digest(copy, memo) != first


@pytest.mark.cuda
def test_a_forced_reply_on_cuda_in_bfloat16(tiny_captioner):
    """The GPU path: weights in bfloat16 on CUDA, the grammar's masks applied to CUDA logits."""
    model = load_vl_model(tiny_captioner, engine="transformers", device="cuda")
    assert next(model.model.parameters()).dtype.is_floating_point and model.device == "cuda"
    reply = model.generate([Request(chat(2), [frames(3, 0), frames(4, 1)], fps=4.0)], reply_schema(2), 400,
                           logits_processors=[ForceReply(tiny_captioner)])[0]  # fmt: skip
    assert reply.text == valid_reply(2) and reply.finished
