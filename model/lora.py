"""LoRA on the masked transformers (CogVideoX and Wan), and its files in the formats the ecosystem loads.

    add_lora(transformer, rank=32, alpha=32, targets=DEFAULT_TARGETS["wan"])   # PEFT, base frozen
    save_lora(transformer, folder, rank, alpha, family="wan")   # diffusers + original-Wan (ComfyUI) files
    load_lora(transformer, folder / DIFFUSERS_FILE, scale=1.0)  # merged into the weights (generation)

The adapters are PEFT's LoRA layers added through diffusers' `add_adapter` (the dual mask, window
cross-attention and sparse inter-shot attention run unchanged: LoRA only adds to the linear
layers' outputs). Files:
- `pytorch_lora_weights.safetensors`, diffusers' format (`transformer.<module>.lora_A/B.weight`),
  which stock `WanPipeline` / `CogVideoXPipeline.load_lora_weights` read; alpha / rank is folded into
  lora_B, so the file needs no alpha (diffusers then assumes alpha = rank).
- `wan_lora_comfyui.safetensors` (Wan only), the original Wan naming ComfyUI and musubi-tuner read:
  `diffusion_model.blocks.N.self_attn.q.lora_down.weight`, `lora_up.weight` and `.alpha`; diffusers'
  own converter for such files gives back the same layers (tested).
- merged: `merge_lora(state, lora, ...)` adds scale * B @ A to each targeted weight, for a full
  transformer folder that loads with `from_pretrained`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from model.weights import CheckpointError

# Attention projections and feed-forward of every block: what the Wan LoRA trainers (DiffSynth-Studio,
# musubi-tuner) and diffusers' CogVideoX LoRA scripts target.
DEFAULT_TARGETS = {
    "cogvideox": ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"),
    "wan": ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"),
}
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
COMFYUI_FILE = "wan_lora_comfyui.safetensors"
CONFIG_FILE = "lora_config.json"
# diffusers Wan module names -> the original Wan code's (ComfyUI, musubi-tuner, DiffSynth-Studio)
_WAN_ORIGINAL = (("attn1.to_out.0", "self_attn.o"), ("attn2.to_out.0", "cross_attn.o"), ("attn1.to_", "self_attn."),
                 ("attn2.to_", "cross_attn."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
                 ("attn2.add_k_proj", "cross_attn.k_img"), ("attn2.add_v_proj", "cross_attn.v_img"))  # fmt: skip


def add_lora(transformer, rank: int, alpha: float, dropout: float = 0.0, targets=None, init: str = "default",
             family: str = "wan") -> None:  # fmt: skip
    """Freeze the transformer and add trainable LoRA layers (PEFT) to the `targets` linear layers
    (module-name suffixes; default: the family's attention projections and feed-forward)."""
    from peft import LoraConfig

    transformer.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets or DEFAULT_TARGETS[family]),
                        init_lora_weights=True if init == "default" else init)  # fmt: skip
    transformer.add_adapter(config)


def adapter_state(transformer) -> dict[str, torch.Tensor]:
    """The LoRA weights, keyed `<module>.lora_A.weight` / `<module>.lora_B.weight`, on the CPU in fp32."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}


def layers(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A, B) of a `<module>.lora_A.weight` / `lora_B.weight` state dict."""
    found = {}
    for key, down in state.items():
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            found[module] = (down, state[f"{module}.lora_B.weight"])
    return found


def diffusers_format(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """diffusers' file layout: `transformer.` keys, alpha / rank folded into lora_B."""
    scale = alpha / rank
    return {f"transformer.{k}": (v * scale if ".lora_B." in k else v).contiguous() for k, v in state.items()}


def wan_original_format(state: dict[str, torch.Tensor], rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """The original Wan naming (ComfyUI, musubi-tuner): lora_down / lora_up and each layer's alpha."""
    out = {}
    for module, (down, up) in layers(state).items():
        name = module
        for ours, theirs in _WAN_ORIGINAL:
            name = name.replace(ours, theirs)
        out[f"diffusion_model.{name}.lora_down.weight"] = down.contiguous()
        out[f"diffusion_model.{name}.lora_up.weight"] = up.contiguous()
        out[f"diffusion_model.{name}.alpha"] = torch.tensor(float(alpha))
    return out


def save_lora(transformer, folder: str | os.PathLike, rank: int, alpha: float, family: str, base: str = "") -> Path:
    """Write the adapter in diffusers' format (both families) and the original Wan naming (Wan)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = adapter_state(transformer)
    save_file(diffusers_format(state, rank, alpha), folder / DIFFUSERS_FILE, metadata={"format": "pt"})
    if family == "wan":
        save_file(wan_original_format(state, rank, alpha), folder / COMFYUI_FILE, metadata={"format": "pt"})
    config = {"family": family, "rank": rank, "alpha": alpha, "base_model": base,
              "targets": sorted({m.rsplit(".", 2)[-2] + "." + m.rsplit(".", 1)[-1] for m in layers(state)})}  # fmt: skip
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n")
    return folder


def read_lora(path: str | os.PathLike) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module -> (A, B) with alpha / rank folded into B, from a diffusers-format file (or a folder
    holding one) or an original-Wan-naming file (converted by diffusers' own converter)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no LoRA file (give {DIFFUSERS_FILE}, a folder holding it, or a Wan LoRA)")
    try:
        state = load_file(path)
    except Exception as err:  # noqa: BLE001 - a damaged file is one error for the user
        raise CheckpointError(f"{path}: not a readable safetensors LoRA ({err})") from err
    if any(k.startswith("diffusion_model.") for k in state):
        from diffusers.loaders.lora_conversion_utils import _convert_non_diffusers_wan_lora_to_diffusers

        state = _convert_non_diffusers_wan_lora_to_diffusers(state)
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    found = layers(state)
    if not found:
        raise CheckpointError(f"{path}: holds no lora_A/lora_B pairs")
    return found


def merge_lora(weights: dict[str, torch.Tensor], lora: dict[str, tuple[torch.Tensor, torch.Tensor]],
               scale: float = 1.0) -> dict[str, torch.Tensor]:  # fmt: skip
    """A transformer state dict with scale * B @ A added to each adapted layer's weight."""
    merged = dict(weights)
    for module, (down, up) in lora.items():
        key = f"{module}.weight"
        if key not in merged:
            raise CheckpointError(f"the LoRA adapts {module}, which this transformer does not have")
        weight = merged[key]
        merged[key] = (weight.float() + scale * (up.float() @ down.float())).to(weight.dtype)
    return merged


@torch.no_grad()
def load_lora(transformer, path: str | os.PathLike, scale: float = 1.0) -> int:
    """Merge a LoRA file into a live transformer's weights (generation); returns the layers adapted."""
    lora = read_lora(path)
    params = dict(transformer.named_parameters())
    for module, (down, up) in lora.items():
        weight = params.get(f"{module}.weight")
        if weight is None:
            raise CheckpointError(f"{path}: adapts {module}, which this transformer does not have")
        delta = scale * (up.float() @ down.float())
        weight.copy_((weight.float() + delta.to(weight.device)).to(weight.dtype))
    return len(lora)
