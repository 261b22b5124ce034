"""What differs between backbones, behind one small interface: CogVideoX and Wan2.1/Wan2.2.

    family = family_of("models/Wan2.1-T2V-1.3B-Diffusers")        # read from model_index.json
    transformer = family.load_transformer(folder / "transformer")
    objective = family.objective(folder)                           # make_inputs / loss
    encoders = family.encoders(folder, device, dtype)              # VAE + text encoder, frozen
    prediction = family.predict(transformer, engine, inputs, text, scene_frames, scene_text)

Everything outside `model/` (the trainer, precompute, validation, generate) holds latents as
(B, F, C, h, w) with scenes concatenated on F, and text as (B, sum of scene tokens, D); a family
converts to and from its transformer's own layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from model.weights import ModelFolderError

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Family(Protocol):
    """The backbone interface: everything outside `model/` that differs between backbones goes
    through these, so no caller branches on a family's name. A new backbone (HunyuanVideo, LTX-2)
    is a class with these members and one entry in `FAMILIES`."""

    name: str
    components: tuple[str, ...]  # the model folder's parts an export copies
    defaults: dict  # generation defaults: height, width, num_frames, guidance_scale, negative_prompt, fps
    lora_files: tuple[str, ...]  # what a LoRA run exports, for the end-of-run summary

    # the model folder, read without loading weights
    def size_multiple(self, model_path: Path) -> int: ...
    def latent_geometry(self, model_path: Path) -> tuple[int, int]: ...
    def text_length(self, model_path: Path, weights: Path) -> int: ...

    # networks
    @property
    def transformer_class(self): ...
    @property
    def pipeline_class(self): ...
    def load_transformer(self, weights: Path, **options): ...
    def encoders(self, model_path: Path, device, dtype, text_length: int): ...
    def pipeline(self, model_path: Path, transformer, encoders, device, dtype): ...
    def build_tiny(self, folder: Path, **options) -> Path: ...

    # training
    def objective(self, model_path: Path, **options): ...
    def predict(self, transformer, call, inputs, text, scene_frames, scene_text) -> torch.Tensor: ...
    def video_tokens(self, latents: torch.Tensor, config) -> int: ...

    # generation (python -m model.generate)
    def generation_problems(self, args) -> list[str]: ...
    def configure_generation(self, pipe, args) -> None: ...
    def generation_options(self, args) -> dict: ...


# --- CogVideoX ---------------------------------------------------------------------------------


class CogVideoXFamily:
    name = "cogvideox"
    components = ("model_index.json", "tokenizer", "text_encoder", "vae", "scheduler")
    # generation defaults: CogVideoX-5B's size, frames and guidance; no negative prompt
    defaults = dict(height=480, width=720, num_frames=49, guidance_scale=6.0, negative_prompt="", fps=8.0)

    def size_multiple(self, model_path: Path) -> int:
        """Pixels that height and width must be a multiple of (VAE 8x times the 2x2 patch)."""
        return 16

    def latent_geometry(self, model_path: Path) -> tuple[int, int]:
        """(latent channels, VAE spatial factor) from the folder's configs, without loading anything."""
        vae = _read_json(Path(model_path) / "vae" / "config.json")
        transformer = _read_json(Path(model_path) / "transformer" / "config.json")
        return int(transformer.get("in_channels", 16)), 2 ** (len(vae.get("block_out_channels", [0] * 4)) - 1)

    @property
    def transformer_class(self):
        from model.cogvideox import Mask2DiTTransformer3DModel

        return Mask2DiTTransformer3DModel

    @property
    def pipeline_class(self):
        from model.cogvideox_pipeline import Mask2DiTPipeline

        return Mask2DiTPipeline

    def load_transformer(self, weights: Path, attention_backend: str = "segmented", **_options):
        return self.transformer_class.from_pretrained(weights, attention_backend=attention_backend)

    def text_length(self, model_path: Path, weights: Path) -> int:
        return self.transformer_class.load_config(weights)["max_text_seq_length"]

    def objective(self, model_path: Path, weighting: str = "cogvideox", **_options):
        from diffusers import CogVideoXDDIMScheduler

        from model.objectives import VPrediction

        return VPrediction(CogVideoXDDIMScheduler.from_pretrained(model_path, subfolder="scheduler"), weighting)

    def encoders(self, model_path: Path, device, dtype, text_length: int):
        from model.encoders import CogVideoXEncoders

        return CogVideoXEncoders(Path(model_path), device, dtype, text_length)

    def predict(self, transformer, call, inputs, text, scene_frames, scene_text) -> torch.Tensor:
        """The transformer's prediction for (B, F, C, h, w) inputs; `call` is the transformer or its engine."""
        rope = transformer.prepare_rotary_emb(scene_frames, inputs.noisy.shape[-2], inputs.noisy.shape[-1],
                                              device=inputs.noisy.device)  # fmt: skip
        return call(hidden_states=inputs.noisy, encoder_hidden_states=text, timestep=inputs.timesteps,
                    image_rotary_emb=rope, scene_frames=scene_frames, text_lengths=scene_text,
                    clean_scenes=inputs.clean, return_dict=False)[0]  # fmt: skip

    def video_tokens(self, latents: torch.Tensor, config) -> int:
        p, p_t = config.patch_size, config.patch_size_t or 1
        return latents.shape[1] // p_t * (latents.shape[-2] // p) * (latents.shape[-1] // p)

    def pipeline(self, model_path: Path, transformer, encoders, device, dtype):
        """A pipeline around a live transformer (validation), reusing loaded encoders when given."""
        from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
        from transformers import T5EncoderModel, T5Tokenizer

        if encoders is not None:
            tokenizer, text_encoder, vae = encoders.tokenizer, encoders.text_encoder, encoders.vae
        else:
            tokenizer = T5Tokenizer.from_pretrained(model_path, subfolder="tokenizer")
            text_encoder = T5EncoderModel.from_pretrained(model_path, subfolder="text_encoder", dtype=dtype).to(device)
            vae = AutoencoderKLCogVideoX.from_pretrained(model_path, subfolder="vae", dtype=dtype).to(device)
        scheduler = CogVideoXDDIMScheduler.from_pretrained(model_path, subfolder="scheduler")
        return self.pipeline_class(tokenizer, text_encoder, vae, transformer, scheduler)

    def build_tiny(self, folder: Path, **options) -> Path:
        from model.tiny import build_tiny_model

        return build_tiny_model(folder, **options)

    # generation (python -m model.generate): this family's options, their checks and its scheduler
    lora_files = ("pytorch_lora_weights.safetensors for diffusers",)

    def generation_problems(self, args) -> list[str]:
        if getattr(args, "guidance_scale_2", None) is not None:
            return ["--guidance-scale-2 is the low-noise expert's guidance of a Wan2.2-A14B folder"]
        return []

    def configure_generation(self, pipe, args) -> None:
        """CogVideoX's DDIM (or DPM with --scheduler dpm) with trailing timesteps, as its demos use."""
        from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

        scheduler_cls = CogVideoXDPMScheduler if args.scheduler == "dpm" else CogVideoXDDIMScheduler
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, timestep_spacing="trailing")

    def generation_options(self, args) -> dict:
        return dict(use_dynamic_cfg=args.dynamic_cfg, negative_prompts=args.negative_prompt or "")


# --- Wan ----------------------------------------------------------------------------------------


class WanFamily:
    name = "wan"
    components = ("model_index.json", "tokenizer", "text_encoder", "vae", "scheduler", "transformer", "transformer_2")
    # generation defaults: Wan2.1's 480p size, 81 frames at 16 fps, guidance 5, Wan's negative prompt (None)
    defaults = dict(height=480, width=832, num_frames=81, guidance_scale=5.0, negative_prompt=None, fps=16.0)

    def size_multiple(self, model_path: Path) -> int:
        """VAE spatial factor (8 for Wan2.1, 16 for Wan2.2-TI2V) times the transformer's patch."""
        vae = _read_json(Path(model_path) / "vae" / "config.json")
        patch = _read_json(denoiser_folder(model_path) / "config.json").get("patch_size", [1, 2, 2])
        return int(vae.get("scale_factor_spatial") or 8) * int(patch[1])

    def latent_geometry(self, model_path: Path) -> tuple[int, int]:
        """(latent channels, VAE spatial factor) from the folder's configs, without loading anything."""
        vae = _read_json(Path(model_path) / "vae" / "config.json")
        transformer = _read_json(denoiser_folder(model_path) / "config.json")
        return int(transformer.get("in_channels", 16)), int(vae.get("scale_factor_spatial") or 8)

    @property
    def transformer_class(self):
        from model.wan import Mask2DiTWanTransformer3DModel

        return Mask2DiTWanTransformer3DModel

    @property
    def pipeline_class(self):
        from model.wan_pipeline import Mask2DiTWanPipeline

        return Mask2DiTWanPipeline

    def load_transformer(self, weights: Path, attention_backend: str = "segmented", self_attention: str = "full",
                         sparse_tokens: int = 256, rope_scheme: str | None = None, **_options):  # fmt: skip
        if attention_backend not in ("segmented", "dense"):
            raise ValueError(
                f"the Wan transformer takes attention_backend 'segmented' or 'dense', not {attention_backend!r}"
            )
        overrides = {"rope_scheme": rope_scheme} if rope_scheme else {}
        model = self.transformer_class.from_pretrained(weights, **overrides)
        model.set_scene_attention(self_attention, sparse_tokens, attention_backend)
        return model

    def text_length(self, model_path: Path, weights: Path) -> int:
        """The tokenizer's max length, at most Wan's 512 (the length Wan pads every prompt to)."""
        config = Path(model_path) / "tokenizer" / "tokenizer_config.json"
        length = json.loads(config.read_text()).get("model_max_length", 512) if config.is_file() else 512
        return int(min(length, 512))

    @staticmethod
    def expert_range(model_path: Path, expert: str, num_train_timesteps: int) -> tuple[float, float] | None:
        """Timesteps an A14B expert handles: transformer >= boundary (high noise), transformer_2 below."""
        index = json.loads((Path(model_path) / "model_index.json").read_text())
        ratio = index.get("boundary_ratio")
        if ratio is None or not (Path(model_path) / "transformer_2").exists():
            return None
        boundary = ratio * num_train_timesteps
        return (boundary, float(num_train_timesteps)) if expert == "transformer" else (0.0, boundary)

    def objective(self, model_path: Path, flow_shift: float | None = None, expert: str = "transformer", **_options):
        from model.objectives import FlowMatching

        config_path = Path(model_path) / "scheduler" / "scheduler_config.json"
        scheduler = json.loads(config_path.read_text()) if config_path.is_file() else {}
        steps = int(scheduler.get("num_train_timesteps", 1000))
        shift = (
            flow_shift
            if flow_shift is not None
            else float(scheduler.get("flow_shift") or scheduler.get("shift") or 5.0)
        )
        return FlowMatching(shift, steps, self.expert_range(model_path, expert, steps))

    def encoders(self, model_path: Path, device, dtype, text_length: int):
        from model.encoders import WanEncoders

        return WanEncoders(Path(model_path), device, dtype, text_length)

    def predict(self, transformer, call, inputs, text, scene_frames, scene_text) -> torch.Tensor:
        """(B, F, C, h, w) in and out; Wan's transformer takes (B, C, F, h, w)."""
        output = call(hidden_states=inputs.noisy.permute(0, 2, 1, 3, 4), timestep=inputs.timesteps,
                      encoder_hidden_states=text, scene_frames=scene_frames, scene_text=scene_text,
                      clean_scenes=inputs.clean, return_dict=False)[0]  # fmt: skip
        return output.permute(0, 2, 1, 3, 4)

    def video_tokens(self, latents: torch.Tensor, config) -> int:
        p_t, p_h, p_w = config.patch_size
        return latents.shape[1] // p_t * (latents.shape[-2] // p_h) * (latents.shape[-1] // p_w)

    def pipeline(self, model_path: Path, transformer, encoders, device, dtype):
        """A pipeline around one live transformer (validation; an A14B expert then denoises every step)."""
        import torch
        from diffusers import AutoencoderKLWan
        from transformers import AutoTokenizer, UMT5EncoderModel

        if encoders is not None:
            tokenizer, text_encoder, vae = encoders.tokenizer, encoders.text_encoder, encoders.vae
        else:
            tokenizer = AutoTokenizer.from_pretrained(model_path, subfolder="tokenizer")
            text_encoder = UMT5EncoderModel.from_pretrained(model_path, subfolder="text_encoder", dtype=dtype).to(
                device
            )
            vae = AutoencoderKLWan.from_pretrained(model_path, subfolder="vae", dtype=torch.float32).to(device)
        scheduler = _scheduler_class(model_path).from_pretrained(model_path, subfolder="scheduler")
        return self.pipeline_class(tokenizer, text_encoder, vae, scheduler, transformer=transformer)

    def build_tiny(self, folder: Path, **options) -> Path:
        from model.tiny import build_tiny_wan

        return build_tiny_wan(folder, **options)

    lora_files = ("pytorch_lora_weights.safetensors for diffusers", "wan_lora_comfyui.safetensors for ComfyUI")

    def generation_problems(self, args) -> list[str]:
        """CogVideoX's sampling options do not apply: Wan denoises with its own flow-matching scheduler."""
        return [f"{flag} is CogVideoX's; a wan folder denoises with its own scheduler"
                for flag, value in (("--dynamic-cfg", args.dynamic_cfg), ("--scheduler", args.scheduler)) if value]  # fmt: skip

    def configure_generation(self, pipe, args) -> None:
        """Wan keeps its folder's scheduler (UniPC, flow matching)."""

    def generation_options(self, args) -> dict:
        return {"guidance_scale_2": args.guidance_scale_2} if args.guidance_scale_2 is not None else {}


def denoiser_folder(model_path: str | os.PathLike) -> Path:
    """The model folder's transformer: `transformer`, or a Wan2.2-A14B folder's only expert `transformer_2`."""
    path = Path(model_path)
    return path / "transformer" if (path / "transformer").exists() else path / "transformer_2"


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _scheduler_class(model_path: Path):
    """The scheduler class a model folder names (model_index.json), from diffusers."""
    import diffusers

    index = json.loads((Path(model_path) / "model_index.json").read_text())
    return getattr(diffusers, index["scheduler"][1])


FAMILIES: dict[str, Family] = {"cogvideox": CogVideoXFamily(), "wan": WanFamily()}  # one registration each


def family_of(path: str | os.PathLike, name: str = "auto"):
    """The family of a model folder: `name` when given, else read from its model_index.json."""
    if name != "auto":
        if name not in FAMILIES:
            raise ModelFolderError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}")
        return FAMILIES[name]
    index_path = Path(path) / "model_index.json"
    try:
        index = json.loads(index_path.read_text())
    except FileNotFoundError:
        raise ModelFolderError(f"{index_path} not found: pass a diffusers-layout model folder "
                               "(CogVideoX or Wan, with model_index.json)") from None  # fmt: skip
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{index_path}: not valid JSON ({err})") from err
    pipeline = str(index.get("_class_name", "")) if isinstance(index, dict) else ""
    if pipeline.startswith("Wan"):
        return FAMILIES["wan"]
    if pipeline.startswith("CogVideoX"):
        return FAMILIES["cogvideox"]
    raise ModelFolderError(f"{index_path}: pipeline {pipeline!r} is neither CogVideoX nor Wan; this project trains "
                           "and generates with those two backbones")  # fmt: skip
