"""A tiny, randomly initialised Mask²DiT model folder in the real CogVideoX layout.

For smoke runs and tests on machines without weights or a GPU: every component (T5 tokenizer and
encoder, CogVideoX VAE, Mask²DiT transformer, scheduler) is the real class with a tiny config,
saved with `save_pretrained` and loaded back by the same code that loads CogVideoX-5B.

    python -m model.tiny out/tiny-model
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


def _train_sentencepiece(folder: Path) -> None:
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
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": 226, "extra_ids": 0})
    )


def build_tiny_model(folder: str | Path, seed: int = 0, transformer_overrides: dict | None = None) -> Path:
    """Write a complete tiny model folder (model_index.json + the five components) and return it.
    transformer_overrides: changes to the tiny transformer's config (e.g. more attention heads)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from model.pipeline import Mask2DiTPipeline
    from model.transformer import Mask2DiTTransformer3DModel

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


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "out/tiny-model")
    print(f"wrote {build_tiny_model(target)}")
