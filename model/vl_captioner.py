"""An open vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) that writes JSON about videos.

`load_vl_model(folder)` opens a model folder in the layout those models ship in (config.json,
safetensors weights, tokenizer files, preprocessor_config.json, a chat template) and returns a
`VLModel` with one method that matters, `generate(requests)`: each request is a chat (system and
user text, with videos given as uint8 frame arrays at a stated fps) and every reply is held to a
JSON schema by constrained decoding (`model.grammar`). Two engines sit behind it:

- transformers (any machine, CPU included): the video goes through the model's own patch layout,
  done here in numpy (transformers' Qwen video processors need torchvision, which this project
  never requires): frames resized to a multiple of patch x merge within the pixel budget, scaled
  and normalised with the folder's mean and std, padded to whole temporal patches, flattened in
  the order the vision tower reads them. Requests are batched with left padding.
- vLLM's offline engine, where `vllm` is installed and a GPU is present: it takes the same frames
  and chat and applies its own processor; the schema goes to its structured-output backend
  (xgrammar by default there too).

Weights are read from safetensors only (`use_safetensors=True`): a pickled checkpoint in a model
folder is refused, never unpickled, and no code from the folder runs (`trust_remote_code=False`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model.weights import CheckpointError

FAMILIES = {"qwen2_vl": "Qwen2-VL", "qwen2_5_vl": "Qwen2.5-VL", "qwen3_vl": "Qwen3-VL", "qwen3_vl_moe": "Qwen3-VL-MoE"}
VIDEO_WRAPPER = "<|vision_start|><|video_pad|><|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
# Each family's default video preprocessing, as its processor ships it, for folders that omit a value.
DEFAULTS = {
    "qwen2_vl": {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 128 * 28 * 28,
                 "image_mean": (0.48145466, 0.4578275, 0.40821073), "image_std": (0.26862954, 0.26130258, 0.27577711)},
    "qwen3_vl": {"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 128 * 32 * 32,
                 "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5)},
}  # fmt: skip
DEFAULTS["qwen2_5_vl"] = DEFAULTS["qwen2_vl"]
DEFAULTS["qwen3_vl_moe"] = DEFAULTS["qwen3_vl"]

# ChatML, as the Qwen models speak it; used only when a folder ships no chat template of its own.
CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>{% else %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The Qwen-VL rule, transformers' own: both sides a multiple of `factor`, the area within
    [min_pixels, max_pixels], the aspect ratio kept as closely as that allows. (Taken from the PIL
    image processor's module, which imports without torchvision.)"""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as rule
    except ImportError:  # transformers releases before the PIL processors were split out
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as rule
    return rule(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


@dataclass(frozen=True)
class VideoSpec:
    """How a folder's vision tower cuts a video into patches (from preprocessor_config.json)."""

    patch_size: int
    merge_size: int
    temporal_patch_size: int
    min_pixels: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @classmethod
    def from_folder(cls, folder: Path, family: str) -> VideoSpec:
        values = dict(DEFAULTS[family])
        for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
            path = folder / name
            if path.is_file():
                found = _read_json(path)
                values.update({k: found[k] for k in values if k in found})
                size = found.get("size") or {}
                if isinstance(size, dict) and "shortest_edge" in size:
                    values["min_pixels"] = size["shortest_edge"]
        return cls(int(values["patch_size"]), int(values["merge_size"]), int(values["temporal_patch_size"]),
                   int(values["min_pixels"]), tuple(values["image_mean"]), tuple(values["image_std"]))  # fmt: skip


@dataclass
class Video:
    """One video as the vision tower takes it: flattened patches, the (t, h, w) grid and the time of
    each temporal patch (seconds from the first frame)."""

    pixels: np.ndarray  # (t * h * w, channels * temporal_patch * patch * patch), float32
    grid: tuple[int, int, int]
    times: list[float]
    seconds_per_patch: float  # seconds one temporal patch spans (Qwen2.5-VL's second_per_grid_ts)


def video_patches(frames: np.ndarray, fps: float, spec: VideoSpec, max_pixels: int) -> Video:
    """uint8 frames (T, H, W, 3) sampled at `fps` -> the model's patches, in the vision tower's order."""
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3), got {frames.shape}")
    p, m, tp = spec.patch_size, spec.merge_size, spec.temporal_patch_size
    height, width = smart_resize(
        frames.shape[1], frames.shape[2], p * m, spec.min_pixels, max(max_pixels, spec.min_pixels)
    )
    resized = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f)).resize((width, height), Image.BICUBIC))
                        for f in frames])  # fmt: skip
    pixels = resized.astype(np.float32) / 255.0
    pixels = (pixels - np.asarray(spec.image_mean, np.float32)) / np.asarray(spec.image_std, np.float32)
    pixels = pixels.transpose(0, 3, 1, 2)  # T, C, H, W
    if pad := -len(pixels) % tp:  # whole temporal patches: the last frame repeats
        pixels = np.concatenate([pixels, np.repeat(pixels[-1:], pad, axis=0)])
    t, h, w = len(pixels) // tp, height // p, width // p
    patches = pixels.reshape(t, tp, 3, h // m, m, p, w // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    times = [index / fps for index in range(len(frames))] + [(len(frames) - 1) / fps] * pad
    grouped = [(times[i] + times[i + tp - 1]) / 2 for i in range(0, len(times), tp)]
    return Video(np.ascontiguousarray(patches.reshape(t * h * w, 3 * tp * p * p)), (t, h, w), grouped, tp / fps)


@dataclass
class Request:
    """One chat: `messages` in the chat-template form ({"role", "content": str or parts}); a part is
    {"type": "text", "text": ...} or {"type": "video", "video": index into `videos`}."""

    messages: list[dict]
    videos: list[np.ndarray] = field(default_factory=list)  # uint8 (T, H, W, 3) each
    fps: float = 2.0


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int
    finished: bool  # False: stopped at max_new_tokens before the reply was complete
    seconds: float = 0.0  # this request's share of the batch's wall time


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read it as JSON ({err}); is the model folder complete?") from err


def model_family(folder: Path) -> str:
    """The folder's Qwen-VL family from config.json's model_type, or a CheckpointError saying what is there."""
    config = folder / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{folder}: no config.json; --captioner-model takes a Qwen2.5-VL or Qwen3-VL model folder "
                              "(config.json, *.safetensors, tokenizer files) as downloaded from its model page")  # fmt: skip
    kind = _read_json(config).get("model_type")
    if kind not in FAMILIES:
        raise CheckpointError(f"{config}: model_type {kind!r} is not a supported captioner; supported: "
                              f"{', '.join(FAMILIES.values())} ({', '.join(FAMILIES)})")  # fmt: skip
    if not any(folder.glob("*.safetensors")):
        raise CheckpointError(f"{folder}: no *.safetensors weights (pickled .bin/.pt checkpoints are not loaded: they "
                              "can run code); download the safetensors files of the model")  # fmt: skip
    return kind


def folder_digest(folder: Path, memo: dict | None = None) -> str:
    """A digest of every file in the model folder (weights, config, tokenizer, template), so that a
    reply cached for one model is never served for another. `memo` maps a file's (path, size,
    mtime) to its digest, so an unchanged folder is not read again."""
    total = hashlib.blake2b(digest_size=16)
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith(".")):
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        digest = (memo or {}).get(key)
        if digest is None:
            one = hashlib.blake2b(digest_size=16)
            with open(path, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    one.update(chunk)
            digest = one.hexdigest()
            if memo is not None:
                memo[key] = digest
        total.update(f"{path.relative_to(folder).as_posix()}={digest};".encode())
    return total.hexdigest()


def chat_template(folder: Path, tokenizer) -> str:
    """The folder's chat template (chat_template.jinja, chat_template.json, or the tokenizer's), else ChatML."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        template = _read_json(folder / "chat_template.json").get("chat_template")
        if isinstance(template, str):
            return template
    return getattr(tokenizer, "chat_template", None) or CHATML


def expand_videos(text: str, family: str, videos: list[Video], merge_size: int) -> str:
    """The rendered chat with each video's placeholder grown to one pad token per merged patch; Qwen3-VL
    puts each temporal patch's time before its own vision block, as its processor does."""
    pieces = text.split(VIDEO_WRAPPER)
    if len(pieces) - 1 != len(videos):
        raise ValueError(f"the chat template rendered {len(pieces) - 1} video placeholders for {len(videos)} videos")
    out = [pieces[0]]
    for video, rest in zip(videos, pieces[1:]):
        t, h, w = video.grid
        per_patch = h * w // merge_size**2
        if family.startswith("qwen3"):
            out += [
                f"<{time:.1f} seconds><|vision_start|>{VIDEO_PAD * per_patch}<|vision_end|>" for time in video.times
            ]
        else:
            out.append(f"<|vision_start|>{VIDEO_PAD * (t * per_patch)}<|vision_end|>")
        out.append(rest)
    return "".join(out)


class VLModel:
    """A Qwen-VL folder loaded for captioning (see the module doc). `engine` is transformers or vllm."""

    engine = "transformers"

    def __init__(self, folder: Path, device: str = "cpu", dtype: str = "auto", max_pixels: int = 360 * 640):
        from transformers import AutoModelForImageTextToText, AutoTokenizer

        self.folder = Path(folder)
        self.family = model_family(self.folder)
        self.spec = VideoSpec.from_folder(self.folder, self.family)
        self.max_pixels = max_pixels
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=False)
        self.template = chat_template(self.folder, self.tokenizer)
        torch_dtype = _dtype(dtype, device)
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.folder, dtype=torch_dtype, trust_remote_code=False, use_safetensors=True
        ).to(device).eval()  # fmt: skip
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.stop_ids = stop_token_ids(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]

    def render(self, request: Request) -> tuple[str, list[Video]]:
        videos = [video_patches(v, request.fps, self.spec, self.max_pixels) for v in request.videos]
        text = self.tokenizer.apply_chat_template(request.messages, chat_template=self.template, tokenize=False,
                                                  add_generation_prompt=True)  # fmt: skip
        return expand_videos(text, self.family, videos, self.spec.merge_size), videos

    def generate(self, requests: list[Request], schema: dict | None, max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0, logits_processors: list | None = None) -> list[Generation]:  # fmt: skip
        """One reply per request, each held to `schema` (a JSON schema; None: free text), in one batched
        generate call."""
        import torch
        from transformers import LogitsProcessorList

        from model.grammar import JsonSchemaLogits

        began = time.perf_counter()
        rendered = [self.render(r) for r in requests]
        ids = [self.tokenizer(text, add_special_tokens=False)["input_ids"] for text, _ in rendered]
        longest = max(len(i) for i in ids)
        input_ids = torch.tensor([[self.pad_id] * (longest - len(i)) + i for i in ids], device=self.device)
        attention = torch.tensor([[0] * (longest - len(i)) + [1] * len(i) for i in ids], device=self.device)
        inputs = {"input_ids": input_ids, "attention_mask": attention}
        videos = [v for _, vs in rendered for v in vs]
        if videos:
            dtype = next(self.model.parameters()).dtype
            inputs["pixel_values_videos"] = torch.from_numpy(np.concatenate([v.pixels for v in videos])).to(
                self.device, dtype
            )
            inputs["video_grid_thw"] = torch.tensor([v.grid for v in videos], device=self.device)
            if self.family == "qwen2_5_vl":
                inputs["second_per_grid_ts"] = torch.tensor([v.seconds_per_patch for v in videos], device=self.device)
        processors = LogitsProcessorList(logits_processors or [])
        if schema is not None:
            processors.append(JsonSchemaLogits(self.tokenizer, schema, len(requests), self.vocab_size, self.stop_ids))
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs, logits_processor=processors, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                eos_token_id=self.stop_ids, pad_token_id=self.pad_id,
            )  # fmt: skip
        share = (time.perf_counter() - began) / len(requests)
        results = []
        for row, prompt in zip(out[:, longest:].tolist(), ids):
            stop = next((i for i, token in enumerate(row) if token in self.stop_ids), None)
            reply = row if stop is None else row[:stop]
            results.append(Generation(self.tokenizer.decode(reply, skip_special_tokens=True), len(prompt),
                                      len(reply) + (stop is not None), stop is not None, share))  # fmt: skip
        return results


def stop_token_ids(tokenizer) -> list[int]:
    """The tokens that end a reply: the chat's end-of-turn and the tokenizer's end of text."""
    ids = []
    for token in ("<|im_end|>", "<|endoftext|>", tokenizer.eos_token):
        index = tokenizer.convert_tokens_to_ids(token) if token else None
        if isinstance(index, int) and index != tokenizer.unk_token_id and index not in ids:
            ids.append(index)
    if not ids:
        raise CheckpointError("the tokenizer has no end-of-turn token (<|im_end|>) nor an eos token")
    return ids


def _dtype(name: str, device: str):
    import torch

    if name == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


class VllmModel:
    """The same interface on vLLM's offline engine (GPU machines with `vllm` installed). vLLM applies
    the model's own processor to the frames, and its structured-output backend holds the reply to the
    schema. Not exercised by the CPU tests: there is no vLLM there."""

    engine = "vllm"

    def __init__(self, folder: Path, max_pixels: int = 360 * 640, gpu_memory_utilization: float = 0.85,
                 max_videos: int = 8):  # fmt: skip
        from vllm import LLM

        self.folder = Path(folder)
        self.family = model_family(self.folder)
        self.max_pixels = max_pixels
        self.llm = LLM(model=str(self.folder), trust_remote_code=False, limit_mm_per_prompt={"video": max_videos},
                       gpu_memory_utilization=gpu_memory_utilization,
                       mm_processor_kwargs={"max_pixels": max_pixels})  # fmt: skip
        self.tokenizer = self.llm.get_tokenizer()
        self.template = chat_template(self.folder, self.tokenizer)

    def generate(self, requests: list[Request], schema: dict, max_new_tokens: int, temperature: float = 0.0,
                 seed: int = 0, logits_processors: list | None = None) -> list[Generation]:  # fmt: skip
        import vllm

        began = time.perf_counter()
        params = {"max_tokens": max_new_tokens, "temperature": temperature, "seed": seed}
        if hasattr(vllm.sampling_params, "StructuredOutputsParams"):  # vLLM 0.11 and later
            params["structured_outputs"] = vllm.sampling_params.StructuredOutputsParams(json=schema)
        else:
            params["guided_decoding"] = vllm.sampling_params.GuidedDecodingParams(json=schema)
        prompts = []
        for request in requests:
            text = self.tokenizer.apply_chat_template(request.messages, chat_template=self.template, tokenize=False,
                                                      add_generation_prompt=True)  # fmt: skip
            metadata = [{"fps": request.fps, "total_num_frames": len(v), "frames_indices": list(range(len(v))),
                         "duration": len(v) / request.fps, "video_backend": "frames"} for v in request.videos]  # fmt: skip
            videos = [(np.asarray(v), meta) for v, meta in zip(request.videos, metadata)]
            prompts.append({"prompt": text, "multi_modal_data": {"video": videos}} if videos else {"prompt": text})
        outputs = self.llm.generate(prompts, vllm.SamplingParams(**params), use_tqdm=False)
        share = (time.perf_counter() - began) / max(1, len(requests))
        return [
            Generation(o.outputs[0].text, len(o.prompt_token_ids or []), len(o.outputs[0].token_ids),
                       o.outputs[0].finish_reason == "stop", share)
            for o in outputs
        ]  # fmt: skip


def vllm_usable() -> bool:
    """vLLM is installed and a CUDA GPU is visible: the faster engine can serve the captioner."""
    try:
        import importlib.util

        import torch

        return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
    except ImportError:
        return False


def load_vl_model(folder: str | os.PathLike, engine: str = "auto", device: str | None = None, dtype: str = "auto",
                  max_pixels: int = 360 * 640):  # fmt: skip
    """The captioner's model: vLLM where `engine` is vllm (or auto with vLLM and a GPU), else transformers."""
    import torch

    folder = Path(folder)
    model_family(folder)  # a clear error before any engine starts
    if engine == "vllm" or (engine == "auto" and vllm_usable()):
        return VllmModel(folder, max_pixels=max_pixels)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return VLModel(folder, device=device, dtype=dtype, max_pixels=max_pixels)
