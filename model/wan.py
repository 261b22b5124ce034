"""Mask²DiT on Wan2.1/Wan2.2: diffusers' `WanTransformer3DModel` with the dual mask and clean scenes.

Same parameters, same names, same config keys as the stock model, so the `transformer/` (and
`transformer_2/`) folders of Wan2.1-T2V-1.3B/14B, Wan2.2-TI2V-5B and both Wan2.2-A14B experts load
with `from_pretrained` unchanged. Called without scene arguments it *is* the stock model.

    model = Mask2DiTWanTransformer3DModel.from_pretrained("Wan2.1-T2V-1.3B-Diffusers", subfolder="transformer")
    out = model(latents, t, text, scene_frames=[6, 9, 6], scene_text=[512, 512, 512],
                global_text=0, clean_scenes=[0]).sample

- `hidden_states` (B, C, F, h, w) holds all scenes' latent frames, concatenated on F.
- `encoder_hidden_states` (B, G + sum(scene_text), D): an optional global caption of
  `global_text` tokens, then each scene's text (each padded as Wan pads one prompt).
- cross-attention: video of scene i sees the global text and text i (`model.layout.WanSceneLayout`);
- self-attention: all video ("full", the default), or HoloCine's sparse inter-shot attention
  (`set_scene_attention(self_attention="sparse", sparse_tokens=k)`). Both are exact: rectangles
  of the mask merged by log-sum-exp (`model.attention.rectangle_attention`), no N x N mask.
- clean scenes are modulated with t=0 (Wan2.2 TI2V's per-token timesteps, computed once per scene).
- RoPE frame positions run on across scenes (`rope_scheme="consecutive"`, the default, as the
  official Mask²DiT and as a stock Wan sees one long video); "restart" starts every scene at 0,
  "jump" adds `rope_scene_gap` positions at every cut (ShotStream / MultiShotMaster-style shot phase).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_wan import WanAttnProcessor, WanTransformer3DModel, WanTransformerBlock
from diffusers.utils import apply_lora_scale

from model.attention import rectangle_attention
from model.layout import WanSceneLayout, clean_mask
from model.sequence_parallel import SequenceShard, chunk_sizes, gather_tokens, heads_to_tokens, tokens_to_heads
from model.sequence_parallel import local_lengths as shard_lengths

ROPE_SCHEMES = ("consecutive", "restart", "jump")
SELF_ATTENTION = ("full", "sparse")
WAN_BACKENDS = ("segmented", "dense")


@dataclass(frozen=True)
class SceneContext:
    """What every block needs to know about the scenes, for the tokens this rank holds."""

    layout: WanSceneLayout
    local_lengths: tuple[int, ...]  # video tokens per scene on this rank (all of them without SP)
    per_scene: bool  # modulation vectors are (B, S, ...) per scene, not per sample or per token
    backend: str
    shard: SequenceShard | None = None
    counts: tuple[int, ...] = ()  # video tokens of every rank (SP)


def _scenewise(fn: Callable, lengths: Sequence[int] | None, tokens: Sequence[torch.Tensor], vectors):
    """fn(*token chunks, *vectors of that scene) per scene, re-joined; lengths None: one call, vectors as they are."""
    if lengths is None:
        return fn(*tokens, *vectors)
    chunks = [t.split(list(lengths), dim=1) for t in tokens]
    parts = [fn(*(c[i] for c in chunks), *(v[:, i : i + 1] for v in vectors)) for i in range(len(lengths))]
    return torch.cat(parts, dim=1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on (B, N, H, D) with interleaved (cos, sin) of shape (1, N, 1, D)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


def _heads(attn, x: torch.Tensor) -> torch.Tensor:
    return x.unflatten(2, (attn.heads, -1))  # (B, N, H*D) -> (B, N, H, D)


class WanSceneSelfAttnProcessor(WanAttnProcessor):
    """Wan's self-attention (QK RMS-norm across heads, RoPE) over all scenes' video: full or sparse,
    with Ulysses sequence parallelism when the model has a shard. Without scenes: the stock processor."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 scenes: SceneContext | None = None):  # fmt: skip
        if scenes is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query, key, value = _heads(attn, attn.norm_q(query)), _heads(attn, attn.norm_k(key)), _heads(attn, value)
        if rotary_emb is not None:
            query, key = apply_rotary(query, *rotary_emb), apply_rotary(key, *rotary_emb)
        layout = scenes.layout
        sparse = layout.sparse_tokens is not None and layout.num_scenes > 1
        if scenes.shard is None and not sparse and scenes.backend != "dense":  # all video sees all video
            out = dispatch_attention_fn(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                        backend=self._attention_backend)  # fmt: skip
        else:
            query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # (B, H, N, D)
            if scenes.shard is not None:  # token shard, all heads -> all tokens, H/P heads
                query, key, value = (tokens_to_heads(x, scenes.shard, list(scenes.counts)) for x in (query, key, value))
            out = self.attend(query, key, value, layout, scenes.backend, sparse)
            if scenes.shard is not None:
                out = heads_to_tokens(out, scenes.shard, list(scenes.counts))
            out = out.transpose(1, 2)
        out = out.flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))

    @staticmethod
    def attend(query, key, value, layout: WanSceneLayout, backend: str, sparse: bool) -> torch.Tensor:
        """(B, H, N, D) over the whole video sequence."""
        if backend == "dense":
            mask = layout.dense_self_mask(query.device) if sparse else None
            return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        if not sparse:
            return F.scaled_dot_product_attention(query, key, value)
        # One concatenation of every scene's first k keys (S*k tokens), shared by all scenes.
        summary_k = torch.cat([key[:, :, s:e] for s, e in layout.summary_spans], dim=2)
        summary_v = torch.cat([value[:, :, s:e] for s, e in layout.summary_spans], dim=2)
        return rectangle_attention(query, [(key, value), (summary_k, summary_v)], layout.sparse_plan())


class WanSceneCrossAttnProcessor(WanAttnProcessor):
    """Wan's text cross-attention with windows: the video of scene i sees the global text and text i.
    Without scenes: the stock processor."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None,
                 scenes: SceneContext | None = None):  # fmt: skip
        if scenes is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, rotary_emb)
        if attn.add_k_proj is not None:
            raise ValueError("multi-scene input is not supported with image conditioning (Wan2.1 I2V)")
        layout = scenes.layout
        query = _heads(attn, attn.norm_q(attn.to_q(hidden_states))).transpose(1, 2)  # (B, H, n, D)
        key = _heads(attn, attn.norm_k(attn.to_k(encoder_hidden_states))).transpose(1, 2)  # (B, H, T, D)
        value = _heads(attn, attn.to_v(encoder_hidden_states)).transpose(1, 2)
        if scenes.backend == "dense":
            mask = layout.dense_cross_mask(query.device)
            if scenes.shard is not None:
                start, end = scenes.shard.bounds(layout.video_total)
                mask = mask[start:end]
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        else:
            out = rectangle_attention(query, [(key, value)], layout.cross_plan(scenes.local_lengths))
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))


class Mask2DiTWanBlock(WanTransformerBlock):
    """WanTransformerBlock whose modulation can differ per scene and whose attention follows the
    scene layout. Same parameters; without scenes it is the stock block."""

    def forward(self, hidden_states, encoder_hidden_states, temb, rotary_emb, scenes: SceneContext | None = None):
        if scenes is None:
            return super().forward(hidden_states, encoder_hidden_states, temb, rotary_emb)
        lengths = scenes.local_lengths if scenes.per_scene else None
        if temb.ndim == 4:  # (B, S or L, 6, D): per scene or per token
            mods = (self.scale_shift_table.unsqueeze(0) + temb.float()).unbind(2)
        else:  # (B, 6, D)
            mods = (self.scale_shift_table + temb.float()).unsqueeze(2).unbind(1)
        shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = mods

        def modulate(x, scale, shift):
            return x * (1 + scale) + shift

        def gated(x, update, gate):
            return x + update * gate

        # 1. Self-attention
        norm = _scenewise(modulate, lengths, [self.norm1(hidden_states.float())], (scale_msa, shift_msa))
        attn_output = self.attn1(norm.type_as(hidden_states), None, None, rotary_emb, scenes=scenes)
        hidden_states = _scenewise(gated, lengths, [hidden_states.float(), attn_output], (gate_msa,))
        hidden_states = hidden_states.type_as(attn_output)

        # 2. Cross-attention (windows per scene)
        norm = self.norm2(hidden_states.float()).type_as(hidden_states)
        hidden_states = hidden_states + self.attn2(norm, encoder_hidden_states, None, None, scenes=scenes)

        # 3. Feed-forward
        norm = _scenewise(modulate, lengths, [self.norm3(hidden_states.float())], (c_scale_msa, c_shift_msa))
        ff_output = self.ffn(norm.type_as(hidden_states))
        out = _scenewise(gated, lengths, [hidden_states.float(), ff_output.float()], (c_gate_msa,))
        return out.type_as(hidden_states)


class Mask2DiTWanTransformer3DModel(WanTransformer3DModel):
    """The Mask²DiT multi-scene transformer on Wan. See the module docstring; forward documents the scene arguments."""

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 40,
        attention_head_dim: int = 128,
        in_channels: int = 16,
        out_channels: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 13824,
        num_layers: int = 40,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        scene_self_attention: str = "full",
        sparse_tokens: int = 256,
        attention_backend: str = "segmented",
        rope_scheme: str = "consecutive",
        rope_scene_gap: int = 8,
    ):
        # The stock signature is restated on purpose: diffusers builds a model from the config keys
        # the constructor names, so `**kwargs` would silently drop a checkpoint's configuration.
        super().__init__(
            patch_size=patch_size, num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            in_channels=in_channels, out_channels=out_channels, text_dim=text_dim, freq_dim=freq_dim,
            ffn_dim=ffn_dim, num_layers=num_layers, cross_attn_norm=cross_attn_norm, qk_norm=qk_norm, eps=eps,
            image_dim=image_dim, added_kv_proj_dim=added_kv_proj_dim, rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
        )  # fmt: skip
        if rope_scheme not in ROPE_SCHEMES:
            raise ValueError(f"rope_scheme must be one of {ROPE_SCHEMES}, got {rope_scheme!r}")
        if rope_scene_gap < 0:
            raise ValueError(f"rope_scene_gap must be >= 0, got {rope_scene_gap}")
        for block in self.blocks:
            block.__class__ = Mask2DiTWanBlock  # same parameters; only forward learns scenes
        self._sequence_shard: SequenceShard | None = None
        self.set_scene_attention(scene_self_attention, sparse_tokens, attention_backend)

    # --- switches --------------------------------------------------------------------------------

    def set_scene_attention(
        self, self_attention: str | None = None, sparse_tokens: int | None = None, backend: str | None = None
    ) -> None:
        """Self-attention over scenes: "full" (all video sees all video) or "sparse" (own scene plus the
        first `sparse_tokens` tokens of every scene). backend: "segmented" (exact, no N x N mask) or
        "dense" (boolean-mask SDPA, the oracle)."""
        self_attention = self_attention or self.config.scene_self_attention
        sparse_tokens = int(sparse_tokens if sparse_tokens is not None else self.config.sparse_tokens)
        backend = backend or self.config.attention_backend
        if self_attention not in SELF_ATTENTION:
            raise ValueError(f"self_attention must be one of {SELF_ATTENTION}, got {self_attention!r}")
        if sparse_tokens < 1:
            raise ValueError(f"sparse_tokens must be at least 1, got {sparse_tokens}")
        if backend not in WAN_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {', '.join(WAN_BACKENDS)}")
        for block in self.blocks:
            block.attn1.set_processor(WanSceneSelfAttnProcessor())
            block.attn2.set_processor(WanSceneCrossAttnProcessor())
        self.register_to_config(scene_self_attention=self_attention, sparse_tokens=sparse_tokens,
                                attention_backend=backend)  # fmt: skip

    def enable_sequence_parallel(self, shard: SequenceShard | None) -> None:
        """Shard the video tokens over `shard`'s ranks (Ulysses); None turns it off. Not saved with the model."""
        if shard is not None:
            shard.check_heads(self.config.num_attention_heads)
        self._sequence_shard = shard if shard is not None and shard.size > 1 else None

    # --- scene geometry ----------------------------------------------------------------------

    def scene_layout(self, scene_frames: Sequence[int], height: int, width: int, scene_text: Sequence[int],
                     global_text: int = 0) -> WanSceneLayout:  # fmt: skip
        """Token layout of latents (height x width) holding `scene_frames` latent frames per scene."""
        p_t, p_h, p_w = self.config.patch_size
        if any(f % p_t for f in scene_frames):
            raise ValueError(
                f"each scene's latent frames must be a multiple of patch_size[0]={p_t}: {list(scene_frames)}"
            )
        per_frame = (height // p_h) * (width // p_w)
        sparse = self.config.sparse_tokens if self.config.scene_self_attention == "sparse" else None
        return WanSceneLayout(tuple(f // p_t * per_frame for f in scene_frames), tuple(int(n) for n in scene_text),
                              int(global_text), sparse)  # fmt: skip

    def frame_positions(self, scene_frames: Sequence[int]) -> torch.Tensor:
        """RoPE frame position of every (patched) latent frame, following `config.rope_scheme`."""
        p_t = self.config.patch_size[0]
        frames = [f // p_t for f in scene_frames]
        scheme, gap = self.config.rope_scheme, self.config.rope_scene_gap
        if scheme == "consecutive" or len(frames) == 1:
            positions = torch.arange(sum(frames))
        elif scheme == "restart":
            positions = torch.cat([torch.arange(f) for f in frames])
        else:  # jump: consecutive, plus a gap at every cut
            positions = torch.cat([torch.arange(f) + sum(frames[:i]) + i * gap for i, f in enumerate(frames)])
        if int(positions.max()) >= self.config.rope_max_seq_len:
            raise ValueError(f"RoPE frame positions reach {int(positions.max())}, beyond rope_max_seq_len="
                             f"{self.config.rope_max_seq_len}; use fewer frames or a smaller rope_scene_gap")  # fmt: skip
        return positions

    def scene_rope(self, scene_frames: Sequence[int], height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) of shape (1, N, 1, head_dim) for the concatenated scenes; with consecutive
        positions, exactly what the stock `rope` gives for the whole video."""
        rope = self.rope
        _, p_h, p_w = self.config.patch_size
        rows, cols = height // p_h, width // p_w
        times = self.frame_positions(scene_frames).to(rope.freqs_cos.device)
        split = [rope.t_dim, rope.h_dim, rope.w_dim]

        def grid(freqs):
            t, h, w = freqs.split(split, dim=1)
            n = len(times)
            parts = (t[times].view(n, 1, 1, -1).expand(n, rows, cols, -1),
                     h[:rows].view(1, rows, 1, -1).expand(n, rows, cols, -1),
                     w[:cols].view(1, 1, cols, -1).expand(n, rows, cols, -1))  # fmt: skip
            return torch.cat(parts, dim=-1).reshape(1, n * rows * cols, 1, -1)

        return grid(rope.freqs_cos), grid(rope.freqs_sin)

    def _scene_timesteps(self, timestep: torch.Tensor, clean: torch.Tensor | None, layout: WanSceneLayout, batch: int):
        """(timesteps flattened for the condition embedder, their sequence length or None, per_scene)."""
        timestep = torch.as_tensor(timestep)
        if timestep.ndim == 2:  # per token, as Wan2.2 TI2V passes it
            if timestep.shape[1] != layout.video_total:
                raise ValueError(f"timestep has {timestep.shape[1]} per-token values for {layout.video_total} tokens")
            if clean is not None and bool(clean.any()):
                tokens = clean.repeat_interleave(torch.tensor(layout.video_lengths, device=clean.device), dim=1)
                timestep = timestep.masked_fill(tokens.to(timestep.device), 0)
            return timestep.flatten(), timestep.shape[1], False
        timestep = timestep.reshape(-1).expand(batch)
        if clean is None or not bool(clean.any()):
            return timestep, None, False
        per_scene = torch.where(clean.to(timestep.device), torch.zeros_like(timestep)[:, None], timestep[:, None])
        return per_scene.flatten(), layout.num_scenes, True

    # --- forward -----------------------------------------------------------------------------

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_hidden_states_image: torch.Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict[str, Any] | None = None,
        scene_frames: Sequence[int] | None = None,
        scene_text: Sequence[int] | None = None,
        global_text: int = 0,
        clean_scenes: torch.Tensor | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor] | Transformer2DModelOutput:
        """Stock Wan arguments, plus:

        scene_frames: latent frames of each scene, in order (they sum to F). Default: one scene.
        scene_text: text tokens of each scene after the `global_text` global tokens. Default: an equal split.
        global_text: tokens of a global caption at the start of `encoder_hidden_states`, seen by every scene.
        clean_scenes: scenes that are clean context (t=0 modulation): indices for the whole batch, or
            a bool tensor (S,) or (B, S).
        timestep: (B,) or per token (B, F*h*w/patch), as the stock model takes it.
        """
        if scene_frames is None and scene_text is None and clean_scenes is None and not global_text \
                and self._sequence_shard is None:  # fmt: skip
            return super().forward(hidden_states, timestep, encoder_hidden_states, encoder_hidden_states_image,
                                   return_dict=return_dict, attention_kwargs=attention_kwargs)  # fmt: skip
        batch, _, num_frames, height, width = hidden_states.shape
        scene_frames = [int(f) for f in scene_frames] if scene_frames is not None else [num_frames]
        if sum(scene_frames) != num_frames:
            raise ValueError(
                f"scene_frames {scene_frames} sum to {sum(scene_frames)}, hidden_states has {num_frames} frames"
            )
        text_total = encoder_hidden_states.shape[1] - int(global_text)
        if scene_text is None:
            if text_total % len(scene_frames):
                raise ValueError(f"{text_total} text tokens cannot be split equally over {len(scene_frames)} scenes; "
                                 "pass scene_text")  # fmt: skip
            scene_text = [text_total // len(scene_frames)] * len(scene_frames)
        if sum(scene_text) != text_total:
            raise ValueError(f"global_text {global_text} + scene_text {list(scene_text)} do not add up to the "
                             f"{encoder_hidden_states.shape[1]} text tokens of encoder_hidden_states")  # fmt: skip
        layout = self.scene_layout(scene_frames, height, width, scene_text, global_text)
        if encoder_hidden_states_image is not None and layout.num_scenes > 1:
            raise ValueError("multi-scene input is not supported with image conditioning (Wan2.1 I2V)")
        p_t, p_h, p_w = self.config.patch_size

        rotary_emb = self.scene_rope(scene_frames, height, width)
        tokens = self.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()
        clean = clean_mask(clean_scenes, batch, layout.num_scenes, hidden_states.device)
        flat_t, seq_len, per_scene = self._scene_timesteps(timestep, clean, layout, batch)
        temb, timestep_proj, encoder_hidden_states, image = self.condition_embedder(
            flat_t, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=seq_len
        )
        timestep_proj = timestep_proj.unflatten(-1, (6, -1))  # (B, 6, D) or (B, S|L, 6, D)
        if image is not None:
            encoder_hidden_states = torch.cat([image, encoder_hidden_states], dim=1)

        shard, local_lengths, counts = self._sequence_shard, layout.video_lengths, ()
        if shard is not None:  # this rank's video tokens; text stays whole (cross-attention keys)
            counts = tuple(chunk_sizes(layout.video_total, shard.size))
            local_lengths = shard_lengths(layout.video_lengths, *shard.bounds(layout.video_total))
            tokens = shard.local(tokens)
            rotary_emb = tuple(shard.local(x) for x in rotary_emb)
            if seq_len is not None and not per_scene:
                temb, timestep_proj = shard.local(temb), shard.local(timestep_proj)
        scenes = SceneContext(layout, local_lengths, per_scene, self.config.attention_backend, shard, counts)

        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                tokens = self._gradient_checkpointing_func(
                    block, tokens, encoder_hidden_states, timestep_proj, rotary_emb, scenes
                )
            else:
                tokens = block(tokens, encoder_hidden_states, timestep_proj, rotary_emb, scenes)

        # Output norm and projection: modulation per sample, per token or per scene.
        if temb.ndim == 3:
            shift, scale = (self.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).unbind(2)
        else:
            shift, scale = (self.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        lengths = local_lengths if per_scene else None
        tokens = _scenewise(lambda x, sc, sh: x * (1 + sc) + sh, lengths, [self.norm_out(tokens.float())],
                            (scale.to(tokens.device), shift.to(tokens.device))).type_as(tokens)  # fmt: skip
        tokens = self.proj_out(tokens)
        if shard is not None:  # every rank gets the whole prediction
            tokens = gather_tokens(tokens, shard, list(counts))

        tokens = tokens.reshape(batch, num_frames // p_t, height // p_h, width // p_w, p_t, p_h, p_w, -1)
        output = tokens.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
