"""Tiny, randomly initialised Mask²DiT model folders in the real CogVideoX and Wan layouts.

For smoke runs and tests on machines without weights or a GPU: every component (tokenizer, text
encoder, VAE, Mask²DiT transformer(s), scheduler) is the real class with a tiny config, saved with
`save_pretrained` and loaded back by the same code that loads CogVideoX-5B or Wan2.1/Wan2.2.

    python -m model.tiny out/tiny-model                    # CogVideoX layout
    python -m model.tiny out/tiny-wan --family wan         # Wan2.1 layout
    python -m model.tiny out/tiny-a14b --family wan --layout wan2.2-a14b
    python -m model.tiny out/tiny-backbones --backbones     # CLIP, DINOv2, I3D for training.evaluate
    python -m model.tiny out/tiny-qwen --captioner qwen2.5-vl # a Qwen2.5-VL folder for --captioner local
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

TINY_TRANSFORMER = dict(
    num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=32,
    text_embed_dim=32, num_layers=2, sample_width=8, sample_height=8, sample_frames=9, max_text_seq_length=16,
    use_rotary_positional_embeddings=True,
)  # fmt: skip
TINY_SIZE = dict(height=32, width=32, num_frames=9)  # pixels; latents are 8x8, 3 frames

_CORPUS_WORDS = (
    "a an the man woman child dog cat Actor1 Actor2 Actor3 walks runs sits stands talks looks opens closes "
    "door room street car city night day red blue grey green coat dress hat table window light dark tall short "
    "young old smiles into out of with at in on and background scene camera slowly quickly"
).split()


def _train_sentencepiece(folder: Path, max_length: int = 226) -> None:
    import sentencepiece as spm

    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        n = len(_CORPUS_WORDS)
        corpus.write_text("\n".join(" ".join(_CORPUS_WORDS[i:] + _CORPUS_WORDS[:i]) for i in range(n)) * 8)
        spm.SentencePieceTrainer.train(
            input=str(corpus), model_prefix=str(Path(tmp) / "spiece"), vocab_size=96, model_type="unigram",
            pad_id=0, eos_id=1, unk_id=2, bos_id=-1, hard_vocab_limit=False, minloglevel=2,
        )  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "spiece.model", folder / "spiece.model")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": max_length, "extra_ids": 0})
    )


def build_tiny_model(folder: str | Path, seed: int = 0, transformer_overrides: dict | None = None) -> Path:
    """Write a complete tiny model folder (model_index.json + the five components) and return it.
    transformer_overrides: changes to the tiny transformer's config (e.g. more attention heads)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from model.cogvideox import Mask2DiTTransformer3DModel
    from model.cogvideox_pipeline import Mask2DiTPipeline

    folder = Path(folder)
    torch.manual_seed(seed)
    _train_sentencepiece(folder / "tokenizer")
    tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    )
    vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 3, up_block_types=("CogVideoXUpBlock3D",) * 3,
        block_out_channels=(8, 8, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        sample_height=32, sample_width=32,
    )  # fmt: skip
    transformer = Mask2DiTTransformer3DModel(**(TINY_TRANSFORMER | (transformer_overrides or {})))
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", prediction_type="v_prediction", rescale_betas_zero_snr=True,
        timestep_spacing="trailing", snr_shift_scale=1.0, clip_sample=False, set_alpha_to_one=True,
    )  # fmt: skip
    pipe = Mask2DiTPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
    pipe.save_pretrained(folder)
    return folder


TINY_WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, text_dim=32, freq_dim=16, ffn_dim=48,
    num_layers=2, rope_max_seq_len=64,
)  # fmt: skip
TINY_WAN_SIZE = dict(height=32, width=32, num_frames=9)  # pixels; latents 4x4 (8x VAE) and 3 frames
WAN_LAYOUTS = ("wan2.1", "wan2.2-a14b", "wan2.2-ti2v")
TINY_WAN_TEXT = 16  # tokens per prompt (Wan pads to 512)


def build_tiny_wan(
    folder: str | Path, seed: int = 0, layout: str = "wan2.1", transformer_overrides: dict | None = None
) -> Path:
    """Write a tiny Wan folder in one of the official diffusers layouts and return it:
    wan2.1 (one transformer), wan2.2-a14b (two experts, `boundary_ratio`), wan2.2-ti2v (the 16x
    residual VAE with 2x2 patchification, `expand_timesteps`)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    from model.wan import Mask2DiTWanTransformer3DModel
    from model.wan_pipeline import Mask2DiTWanPipeline

    if layout not in WAN_LAYOUTS:
        raise ValueError(f"layout must be one of {WAN_LAYOUTS}, got {layout!r}")
    folder = Path(folder)
    torch.manual_seed(seed)
    _train_sentencepiece(folder / "tokenizer", max_length=TINY_WAN_TEXT)
    tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer")
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2)
    )
    z_dim = 4
    vae_options = dict(base_dim=8, z_dim=z_dim, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                       latents_mean=[0.1 * i for i in range(z_dim)], latents_std=[1.0 + 0.5 * i for i in range(z_dim)])  # fmt: skip
    if layout == "wan2.2-ti2v":  # Wan2.2's VAE: residual blocks, 2x2 pixel patches, 16x spatial
        vae_options |= dict(is_residual=True, patch_size=2, scale_factor_spatial=16, in_channels=12, out_channels=12)
    vae = AutoencoderKLWan(**vae_options)
    config = TINY_WAN_TRANSFORMER | dict(in_channels=z_dim, out_channels=z_dim) | (transformer_overrides or {})
    transformer = Mask2DiTWanTransformer3DModel(**config)
    transformer_2 = Mask2DiTWanTransformer3DModel(**config) if layout == "wan2.2-a14b" else None
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000,
    )  # fmt: skip
    pipe = Mask2DiTWanPipeline(
        tokenizer, text_encoder, vae, scheduler, transformer=transformer, transformer_2=transformer_2,
        boundary_ratio=0.875 if transformer_2 is not None else None, expand_timesteps=layout == "wan2.2-ti2v",
    )  # fmt: skip
    pipe.save_pretrained(folder)
    return folder


def build_tiny_backbones(folder: str | Path, seed: int = 0) -> Path:
    """The evaluation backbones in their real formats, random and tiny: a Hugging Face CLIP folder
    (`clip/`), a DINOv2 folder (`dino/`) and a TorchScript I3D-style network (`i3d.pt`), so the
    evaluation manual runs on the tiny chain as written (the numbers measure nothing)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, Dinov2Config, Dinov2Model

    root = Path(folder)
    torch.manual_seed(seed)
    words = ["a", "man", "walks", "dog", "runs", "red", "car", "cafe", "rain", "sits"]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, **{f"{w}</w>": i + 2 for i, w in enumerate(words)}}
    (root / "clip").mkdir(parents=True, exist_ok=True)
    (root / "clip" / "vocab.json").write_text(json.dumps(vocab))
    (root / "clip" / "merges.txt").write_text("#version: 0.2\n")
    clip_config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )  # fmt: skip
    CLIPModel(clip_config).save_pretrained(root / "clip")
    CLIPTokenizer(str(root / "clip" / "vocab.json"), str(root / "clip" / "merges.txt")).save_pretrained(root / "clip")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                             patch_size=8, mlp_ratio=2)).save_pretrained(root / "dino")  # fmt: skip
    torch.jit.save(torch.jit.script(_TinyI3D()), str(root / "i3d.pt"))
    return root


class _TinyI3D(torch.nn.Module):
    """I3D's interface (a (B, 3, T, H, W) clip in [-1, 1] -> logits), a few parameters."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, kernel_size=3, stride=2)
        self.head = torch.nn.Linear(8, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


CAPTIONER_FAMILIES = {"qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "qwen3-vl": "qwen3_vl"}
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|video_pad|>",
             "<|image_pad|>"]  # fmt: skip


def _train_byte_bpe(vocab_size: int = 360):
    """A byte-level BPE tokenizer (Qwen's kind) trained here on caption words and JSON, with Qwen's
    chat and vision special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    words = _CORPUS_WORDS + ["characters", "name", "description", "background", "shots", "Shot", "of", "seconds"]
    corpus = [" ".join(words[i:] + words[:i]) for i in range(len(words))]
    corpus += ['{"characters": [{"name": "Actor1", "description": "a man"}], "background": "a room", "shots": ["x"]}']
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator(corpus * 4, trainer)
    from model.vl_captioner import CHATML

    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)  # fmt: skip


def build_tiny_captioner(folder: str | Path, family: str = "qwen2_5_vl", seed: int = 0) -> Path:
    """A tiny random Qwen2-VL, Qwen2.5-VL or Qwen3-VL folder in the layout the real ones ship in (config.json,
    model.safetensors, tokenizer files, preprocessor_config.json, a chat template), for
    `python curation/run.py --captioner local --captioner-model FOLDER` without weights."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    folder = Path(folder)
    tokenizer = _train_byte_bpe()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIALS}
    vocab = len(tokenizer)
    patch = 16 if family.startswith("qwen3") else 14
    text = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0,
                                 **({"mrope_interleaved": True} if family.startswith("qwen3") else {})})  # fmt: skip
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=patch,
                  spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    if family == "qwen2_vl":
        vision = dict(depth=2, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=patch,
                      spatial_merge_size=2, temporal_patch_size=2)  # fmt: skip
    elif family == "qwen2_5_vl":
        vision.update(fullatt_block_indexes=[1], window_size=4 * patch)
    else:
        vision.update(num_position_embeddings=64, deepstack_visual_indexes=[1])
    config = AutoConfig.for_model(
        family, text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    for part in (config, config.text_config):
        part.bos_token_id, part.eos_token_id, part.pad_token_id = None, ids["<|im_end|>"], ids["<|endoftext|>"]
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    generation = model.generation_config
    generation.bos_token_id, generation.eos_token_id, generation.pad_token_id = (
        None,
        config.eos_token_id,
        config.pad_token_id,
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    qwen3 = family.startswith("qwen3")
    mean = (0.5, 0.5, 0.5) if qwen3 else (0.48145466, 0.4578275, 0.40821073)
    std = (0.5, 0.5, 0.5) if qwen3 else (0.26862954, 0.26130258, 0.27577711)
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "patch_size": patch, "merge_size": 2, "temporal_patch_size": 2, "image_mean": mean, "image_std": std,
        "size": {"shortest_edge": 4 * (2 * patch) ** 2, "longest_edge": 64 * (2 * patch) ** 2},
    }, indent=2))  # fmt: skip
    return folder


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m model.tiny", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("folder", nargs="?", type=Path, default=Path("out/tiny-model"))
    parser.add_argument("--family", choices=["cogvideox", "wan"], default="cogvideox")
    parser.add_argument("--layout", choices=WAN_LAYOUTS, default="wan2.1", help="Wan folder layout")
    parser.add_argument("--backbones", action="store_true",
                        help="write the evaluation backbones instead (CLIP, DINOv2, I3D) for training.evaluate")  # fmt: skip
    parser.add_argument("--captioner", choices=sorted(CAPTIONER_FAMILIES),
                        help="write a captioner folder instead, for curation's --captioner local")  # fmt: skip
    args = parser.parse_args(argv)
    if args.captioner:
        target = build_tiny_captioner(args.folder, CAPTIONER_FAMILIES[args.captioner])
    elif args.backbones:
        target = build_tiny_backbones(args.folder)
    elif args.family == "cogvideox":
        target = build_tiny_model(args.folder)
    else:
        target = build_tiny_wan(args.folder, layout=args.layout)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
