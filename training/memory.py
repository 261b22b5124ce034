"""What a run needs in GPU memory, said before it starts: weights, trainable state, activations.

An estimate, per GPU at batch size 1, from the transformer's parameter counts and the configured
token count (frames, size and scenes): the frozen or trained weights in the training dtype; for
each trainable parameter its gradient (training dtype) and AdamW's fp32 master copy and two moments
(ZeRO shards those over data-parallel ranks; CPU offload moves them off the GPU); activations of
every block as ~17 x tokens x width x bytes (attention without a score matrix: flash or SDPA), or,
with gradient checkpointing, one block's worth plus each block's input. Encoders are excluded
(loaded once, frozen; precomputed latents leave them out entirely). benchmarks/training.py reports
the measured peak beside it on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
CARDS = (24, 48, 80, 141)  # GB: RTX 4090/3090, L40S/A6000, A100/H100, H200


@dataclass(frozen=True)
class MemoryEstimate:
    weights: float  # bytes
    trainable: float  # gradients + optimizer state of the trainable parameters
    activations: float
    tokens: int
    parameters: int
    trainable_parameters: int

    @property
    def total(self) -> float:
        return self.weights + self.trainable + self.activations


def video_tokens(config, family) -> int:
    """Transformer tokens of one sample: latent frames x (height / 16) x (width / 16) (VAE 8x, patch 2x2)."""
    data = config.data
    latent_frames = ((data.num_frames - 1) // 4 + 1) * data.scenes
    return latent_frames * (data.height // 16) * (data.width // 16)


def estimate(transformer, config, family) -> MemoryEstimate:
    params = list(transformer.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    size = 2 if config.run.precision == "bf16" else 4
    optimizer = 12 if config.run.precision == "bf16" else 8  # fp32 master + two moments (fp32: no master)
    if config.run.offload_optimizer:
        optimizer = 0
    text = {"wan": 512, "cogvideox": 226}.get(family.name, 512) * config.data.scenes
    tokens = video_tokens(config, family) + text
    width = int(transformer.config.num_attention_heads * transformer.config.attention_head_dim)
    blocks = int(transformer.config.num_layers)
    block = 17 * tokens * width * size
    activations = (blocks * tokens * width * size + block) if config.model.gradient_checkpointing else blocks * block
    return MemoryEstimate(total * size, trainable * (size + optimizer), activations, tokens, total, trainable)


def memory_plan(transformer, config, family) -> str:
    """A few lines: the estimate, and which GPU sizes it fits."""
    e = estimate(transformer, config, family)
    mode = f"LoRA rank {config.model.lora.rank}" if config.model.lora else "full fine-tuning"
    lines = [f"memory estimate per GPU ({mode}, batch 1, {e.tokens:,} tokens, gradient checkpointing "
             f"{'on' if config.model.gradient_checkpointing else 'off'}): weights {e.weights / GIB:.1f} GiB "
             f"({e.parameters / 1e6:,.0f}M parameters), trainable state {e.trainable / GIB:.2f} GiB "
             f"({e.trainable_parameters / 1e6:,.1f}M trained), activations {e.activations / GIB:.1f} GiB: "
             f"~{e.total / GIB:.1f} GiB"]  # fmt: skip
    fits = []
    for card in CARDS:
        room = card * 1e9 * 0.9  # the CUDA context, allocator slack and the encoders take the rest
        if e.total <= room:
            fits.append(f"{card} GB: fits")
        elif not config.model.gradient_checkpointing and e.weights + e.trainable + e.activations / 8 <= room:
            fits.append(f"{card} GB: with model.gradient_checkpointing=true")
        elif config.model.lora is None and e.weights * 1.1 + e.activations <= room:
            fits.append(f"{card} GB: as a LoRA (model.lora)")
        else:
            fits.append(f"{card} GB: no (fewer data.num_frames, a smaller size, or ZeRO-3 over more GPUs)")
    lines.append("  " + "; ".join(fits))
    return "\n".join(lines)
