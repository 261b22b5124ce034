"""Generate multi-scene videos with Mask²DiT, or extend an earlier result scene by scene.

The backbone (CogVideoX or Wan2.1/Wan2.2, the two A14B experts included) is read from the model
folder's model_index.json; size, frames, guidance and negative prompt default to that backbone's.

    python -m model.generate --model DIR --prompts scenes.json --out out/story
    python -m model.generate --model DIR --expand-from out/story --prompts more.json --out out/story2
    python -m model.generate --model DIR --expand-from shot1.mp4 shot2.mp4 --context-prompts ctx.json \\
        --prompts more.json --out out/story3

A prompt file is a JSON list of prompts (one per scene), or a scene description in the structure
of the paper's evaluation set:
    {"background": "...", "characters": [{"name": "Actor1", "description": "..."}],
     "scenes": ["Actor1 walks into the room ...", ...]}
where every "ActorK" in a scene becomes "ActorK (description)" and the background is appended.
Outputs in --out: scene_00.mp4 ..., video.mp4 (all scenes), latents.safetensors (to expand later)
and generation.json (prompts, seeds, settings).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from model.prompts import PromptFileError, load_prompts


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, and every option's default in its help."""


def write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    """(F, H, W, 3) uint8 -> H.264 MP4 (sizes rounded down to even numbers, as yuv420p needs), atomically."""
    from manifests.media import write_mp4 as write

    write(path, frames, fps, crf=18)


def read_video(path: Path, num_frames: int, height: int, width: int, seed: int = 0, max_stride: int = 3) -> np.ndarray:
    """num_frames frames of a context video, as the official expansion script picks them: the largest
    stride <= max_stride at which they fit, from a start drawn with `seed`; each frame scaled to
    cover height x width and centre-cropped."""
    from manifests.frames import video_frames
    from manifests.sampling import max_stride_window

    frames = []
    for frame in video_frames(path):  # the video stream (cover art skipped), in presentation order
        scale = max(height / frame.height, width / frame.width)
        w, h = max(width, round(frame.width * scale)), max(height, round(frame.height * scale))
        image = frame.to_ndarray(width=w, height=h, format="rgb24")
        top, left = (h - height) // 2, (w - width) // 2
        frames.append(image[top : top + height, left : left + width])
    window = max_stride_window(len(frames), num_frames, max_stride, np.random.default_rng(seed))
    if window is None:
        raise ValueError(f"{path}: has {len(frames)} frames, expansion context needs {num_frames}")
    start, stride = window
    return np.stack(frames[start : start + (num_frames - 1) * stride + 1 : stride])


def save_result(out: Path, result, fps: float, settings: dict) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for i, video in enumerate(result.videos):
        files.append(f"scene_{i:02d}.mp4")
        write_mp4(out / files[-1], video[0], fps)
    if result.videos:
        write_mp4(out / "video.mp4", np.concatenate([v[0] for v in result.videos]), fps)
    save_file({"latents": result.latents.float().cpu().contiguous()}, out / "latents.safetensors")
    record = {
        "prompts": result.prompts,
        "seeds": result.seeds,
        "negative_prompts": result.negative_prompts,
        "scene_frames": result.scene_frames,  # latent frames per scene (what --expand-from reads back)
        "scene_frames_unit": "latent frames",
        "scene_video_frames": [int(v[0].shape[0]) for v in result.videos],  # frames of each scene_NN.mp4
        "scene_files": files,
        "fps": fps,
        "settings": settings,
    }
    (out / "generation.json").write_text(json.dumps(record, indent=2, default=str))


TRUNCATION_NOTICE = "The following part of your input was truncated"  # diffusers' multi-line warning


def _not_truncation_notice(record) -> bool:
    return TRUNCATION_NOTICE not in record.getMessage()


def truncation_warnings(pipe, prompts: list[str], max_length: int) -> list[str]:
    """One line per prompt longer than the text encoder reads, said here instead of diffusers' own
    warning (which prints the cut-off text, `<unk>` pieces and all); that warning is filtered out."""
    import logging

    logger = logging.getLogger(type(pipe)._get_t5_prompt_embeds.__module__)
    if _not_truncation_notice not in logger.filters:  # a function is a filter; added once
        logger.addFilter(_not_truncation_notice)
    lines = []
    for i, prompt in enumerate(prompts):
        tokens = len(pipe.tokenizer(prompt, add_special_tokens=True).input_ids)
        if tokens > max_length:
            lines.append(f"scene {i + 1}'s prompt is {tokens} tokens; the text encoder reads the first {max_length} "
                         "(the rest is ignored: shorten it)")  # fmt: skip
    return lines


def earlier_output_problems(folder: Path, args, family) -> list[str]:
    """What is wrong with an --expand-from folder, found before the model loads: its record, and
    latents that are unreadable, of another shape than the record and this model, or not finite."""
    import numpy as np
    from safetensors import SafetensorError, safe_open

    flag = f"--expand-from {folder}"
    record_path, latents_path = folder / "generation.json", folder / "latents.safetensors"
    if not record_path.is_file() or not latents_path.is_file():
        return [f"{flag}: not an earlier output (needs generation.json and latents.safetensors)"]
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        frames, prompts, seeds = record["scene_frames"], record["prompts"], record["seeds"]
        assert isinstance(frames, list) and frames and all(isinstance(f, int) and f > 0 for f in frames)
        assert isinstance(prompts, list) and len(prompts) == len(frames) and all(isinstance(p, str) for p in prompts)
        assert isinstance(seeds, list) and len(seeds) == len(frames)
    except (ValueError, KeyError, TypeError, AssertionError):
        return [f"{flag}: generation.json is not a generation record (scene_frames, prompts, seeds per scene)"]
    try:
        with safe_open(str(latents_path), framework="numpy") as f:
            if "latents" not in f.keys():
                return [f"{flag}: latents.safetensors holds no 'latents' tensor"]
            latents = f.get_tensor("latents")
    except (SafetensorError, OSError, ValueError) as err:
        return [f"{flag}: latents.safetensors cannot be read ({err}); the file is damaged"]
    problems = []
    channels, factor = family.latent_geometry(args.model) if family is not None else (None, 8)
    expected = (1, sum(frames), channels, args.height // factor, args.width // factor)
    if latents.ndim != 5 or any(e is not None and e != n for e, n in zip(expected, latents.shape)):
        problems.append(f"{flag}: latents have shape {tuple(latents.shape)}, but the record's {len(frames)} scenes "
                        f"of {frames} latent frames at --height {args.height} --width {args.width} on this model "
                        f"need {tuple('C' if e is None else e for e in expected)}")  # fmt: skip
    elif not np.isfinite(latents.astype(np.float32)).all():
        problems.append(f"{flag}: latents.safetensors holds NaN or infinite values; regenerate that output")
    return problems


def load_result(folder: Path):
    from safetensors.torch import load_file

    from model.multiscene import MultiSceneOutput

    record_path, latents_path = folder / "generation.json", folder / "latents.safetensors"
    if not record_path.exists() or not latents_path.exists():
        raise FileNotFoundError(f"{folder}: not an earlier output (needs generation.json and latents.safetensors)")
    record = json.loads(record_path.read_text())
    latents = load_file(latents_path)["latents"]
    return MultiSceneOutput(latents, record["scene_frames"], record["prompts"], record["seeds"],
                            negative_prompts=record.get("negative_prompts"))  # fmt: skip


def apply_family_defaults(args, family) -> None:
    """Fill the options left unset with the backbone's defaults (CogVideoX-5B's or Wan's)."""
    for name, value in family.defaults.items():
        if getattr(args, name, None) is None and name != "negative_prompt":
            setattr(args, name, value)


def argument_problems(args, family=None) -> list[str]:
    """Everything wrong with the arguments, found before any model loads (a 5B model takes minutes)."""
    problems = []
    if args.out.exists() and not args.out.is_dir():
        problems.append(f"--out {args.out} is a file; give a folder for the scene videos")
    else:
        parent = next((p for p in [args.out, *args.out.parents] if p.exists()), Path("."))
        if not os.access(parent, os.W_OK):
            problems.append(f"--out {args.out}: {parent} is not writable")
    if args.num_frames < 1 or (args.num_frames - 1) % 4:
        fit = max(1, (args.num_frames - 1) // 4 * 4 + 1)
        problems.append(f"--num-frames {args.num_frames}: must be 4k+1 (the VAE compresses time 4x), "
                        f"e.g. {fit} or {fit + 4}")  # fmt: skip
    multiple = family.size_multiple(args.model) if family is not None else 16
    for flag, value in (("--height", args.height), ("--width", args.width)):
        if value < multiple or value % multiple:
            problems.append(f"{flag} {value}: must be a positive multiple of {multiple} for this model "
                            "(VAE compression times the 2x2 patch)")  # fmt: skip
    if family is not None:
        problems += family.generation_problems(args)
    for flag, value in (("--steps", args.steps), ("--context-scenes", args.context_scenes)):
        if value < 1:
            problems.append(f"{flag} {value}: must be at least 1")
    if args.fps <= 0:
        problems.append(f"--fps {args.fps}: must be positive")
    if args.guidance_scale < 0:
        problems.append(f"--guidance-scale {args.guidance_scale}: must be >= 0 (1 or less turns guidance off)")
    for flag, value in (("--lora", getattr(args, "lora", None)), ("--lora-2", getattr(args, "lora_2", None))):
        if value is not None and not value.exists():
            problems.append(f"{flag} {value}: not found")
    if getattr(args, "lora_2", None) is not None and family is not None and not (args.model / "transformer_2").exists():
        problems.append("--lora-2 is for the low-noise expert (transformer_2) of a Wan2.2-A14B folder")
    for path in args.expand_from or []:
        if not path.exists():
            problems.append(f"--expand-from {path}: not found")
    sources = args.expand_from or []
    if len(sources) == 1 and sources[0].is_dir():
        problems += earlier_output_problems(sources[0], args, family)
    if sources and not (len(sources) == 1 and sources[0].is_dir()):
        if not args.context_prompts:
            problems.append("--expand-from with video files needs --context-prompts (one prompt per video)")
        else:
            try:
                count = len(load_prompts(args.context_prompts))
                if count != len(sources):
                    problems.append(f"--context-prompts has {count} prompts for {len(sources)} context videos")
            except PromptFileError as err:
                problems.append(f"--context-prompts: {err}")
    try:
        load_prompts(args.prompts, args.story)
    except PromptFileError as err:
        problems.append(f"--prompts: {err}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model.generate", description=__doc__, formatter_class=HelpFormatter
    )
    parser.add_argument("--model", required=True, type=Path,
                        help="CogVideoX- or Wan-layout folder (a Mask²DiT export, or a stock download)")  # fmt: skip
    parser.add_argument("--prompts", required=True, type=Path, help="JSON list of prompts or a scene description")
    parser.add_argument("--story", help="with a file of several stories (e.g. training/eval_prompts.json): its id")
    parser.add_argument("--out", required=True, type=Path, help="output folder (created; files in it are replaced)")
    parser.add_argument("--expand-from", nargs="+", type=Path, help="an earlier output folder, or context video files")
    parser.add_argument("--context-prompts", type=Path, help="prompts of the context videos (with video files)")
    parser.add_argument("--context-scenes", type=int, default=2, help="scenes of context per new scene")
    parser.add_argument("--negative-prompt", default=None,
                        help="negative prompt of every scene, context included (unset: none for CogVideoX, Wan's own for Wan)")  # fmt: skip
    parser.add_argument("--height", type=int, default=None, help="pixels (unset: 480)")
    parser.add_argument("--width", type=int, default=None, help="pixels (unset: 720 CogVideoX, 832 Wan)")
    parser.add_argument(
        "--num-frames", type=int, default=None, help="frames per scene, 4k+1 (unset: 49 CogVideoX, 81 Wan)"
    )
    parser.add_argument(
        "--fps", type=float, default=None, help="frame rate of the written videos (unset: 8 CogVideoX, 16 Wan)"
    )
    parser.add_argument("--steps", type=int, default=50, help="denoising steps")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance, <= 1: off (unset: 6 CogVideoX, 5 Wan)")  # fmt: skip
    parser.add_argument("--guidance-scale-2", type=float, default=None,
                        help="Wan2.2-A14B: guidance of the low-noise expert (unset: --guidance-scale)")  # fmt: skip
    parser.add_argument("--dynamic-cfg", action="store_true", help="CogVideoX's cosine-ramped guidance")
    parser.add_argument("--scheduler", choices=["ddim", "dpm"], default=None,
                        help="CogVideoX's DDIM (unset) or DPM; Wan uses its folder's own scheduler")  # fmt: skip
    parser.add_argument("--seed", type=int, default=42, help="scene k starts from noise seeded seed + k")
    parser.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16", help="compute precision")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (unset: cuda when available)")
    parser.add_argument(
        "--cpu-offload", action="store_true", help="keep components on CPU until used (needs accelerate)"
    )
    parser.add_argument("--vae-tiling", action="store_true", help="decode in spatial tiles (less memory)")
    parser.add_argument("--vae-slicing", action="store_true", help="decode one video at a time")
    parser.add_argument("--lora", type=Path, default=None, help="a LoRA to merge into the transformer: a training "
                        "run's export/lora folder, a diffusers pytorch_lora_weights.safetensors or a Wan (ComfyUI) "
                        "LoRA file")  # fmt: skip
    parser.add_argument("--lora-scale", type=float, default=1.0, help="strength of --lora (default 1)")
    parser.add_argument("--lora-2", type=Path, default=None, help="Wan2.2-A14B: the low-noise expert's "
                        "(transformer_2) LoRA, trained with model.expert=transformer_2")  # fmt: skip
    args = parser.parse_args(argv)
    began = time.perf_counter()
    from model.families import FAMILIES, denoiser_folder, family_of
    from model.weights import CheckpointError, ModelFolderError

    try:
        family, problems = family_of(args.model), []
    except ModelFolderError as err:  # reported with every other problem, before anything loads
        family, problems = None, [f"--model: {err}"]
    apply_family_defaults(args, family or FAMILIES["cogvideox"])
    problems += argument_problems(args, family)
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2

    import torch

    from model.sequence_parallel import init_from_env

    try:
        prompts = load_prompts(args.prompts, args.story)
        context_prompts = load_prompts(args.context_prompts) if args.context_prompts else None
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
        print(f"loading {args.model} ({family.name}, {args.dtype}) ...", file=sys.stderr, flush=True)
        pipe = family.pipeline_class.from_pretrained(args.model, dtype=dtype)
        if args.lora is not None:  # merged into the weights: the same result as a merged folder, at full speed
            from model.lora import load_lora

            layers = load_lora(pipe.transformer, args.lora, args.lora_scale)
            print(f"LoRA {args.lora} merged into {layers} layers (scale {args.lora_scale:g})", file=sys.stderr)
        if args.lora_2 is not None:
            from model.lora import load_lora

            layers = load_lora(pipe.transformer_2, args.lora_2, args.lora_scale)
            print(f"LoRA {args.lora_2} merged into {layers} layers of transformer_2", file=sys.stderr)
    except (PromptFileError, ModelFolderError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    family.configure_generation(pipe, args)
    # Under torchrun/deepspeed (WORLD_SIZE > 1) the ranks shard every sequence (Ulysses): the same
    # result as one process, with per-rank activations ~1/P; rank 0 writes it.
    shard = init_from_env()
    if shard is not None:
        try:
            for denoiser in [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]:
                denoiser.enable_sequence_parallel(shard)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    local = f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if shard is not None else "cuda"
    device = args.device or (local if torch.cuda.is_available() else "cpu")
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if args.vae_tiling:
        pipe.vae.enable_tiling()
    if args.vae_slicing:
        pipe.vae.enable_slicing()
    loaded = time.perf_counter()

    settings = dict(vars(args))
    weights = denoiser_folder(args.model)
    text_length = family.text_length(args.model, weights)
    for line in truncation_warnings(pipe, prompts, text_length):
        print(f"warning: {line}", file=sys.stderr)
    common = dict(height=args.height, width=args.width, num_frames=args.num_frames, num_inference_steps=args.steps,
                  guidance_scale=args.guidance_scale, seed=args.seed, negative_prompts=args.negative_prompt,
                  max_sequence_length=text_length)  # fmt: skip
    common |= family.generation_options(args)
    if args.expand_from:
        sources = args.expand_from
        if len(sources) == 1 and sources[0].is_dir():
            previous = load_result(sources[0])
        else:
            if not context_prompts or len(context_prompts) != len(sources):
                print("error: context videos need --context-prompts with one prompt per video", file=sys.stderr)
                return 2
            from manifests.frames import VideoReadError
            from model.multiscene import MultiSceneOutput

            try:
                latents = [pipe.encode_video(read_video(p, args.num_frames, args.height, args.width, seed=args.seed + i),
                                             seed=args.seed + i) for i, p in enumerate(sources)]  # fmt: skip
            except (VideoReadError, ValueError) as err:  # not a video, too short: the file and what to give
                print(f"error: --expand-from: {err}; give context videos (or an earlier output folder)",
                      file=sys.stderr)  # fmt: skip
                return 2
            previous = MultiSceneOutput(
                torch.cat(latents, 1), [x.shape[1] for x in latents], context_prompts, [-1] * len(latents)
            )
        result = pipe.expand(previous, prompts, context_scenes=args.context_scenes, **common)
    else:
        result = pipe(prompts, **common)
    done = time.perf_counter()
    if shard is None or shard.rank == 0:
        timing = {"load_seconds": loaded - began, "generation_seconds": done - loaded, "seconds": done - began}
        save_result(args.out, result, args.fps, settings | timing | {"family": family.name,
                                                                    "sequence_parallel": shard.size if shard else 1})  # fmt: skip
        print(f"wrote {len(result.videos)} scenes to {args.out}: loading {loaded - began:.1f} s, "
              f"generating {done - loaded:.1f} s ({len(result.videos)} scenes, {args.steps} steps)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
