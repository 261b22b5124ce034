"""Mask²DiT: CogVideoX's transformer with the dual mask and segment-level conditional (clean) scenes.

Built on diffusers' `CogVideoXTransformer3DModel` (same parameters, same names, same config), so a
CogVideoX-5B or -2B `transformer/` folder loads unchanged with `from_pretrained`. What changes:

- n scenes share one sequence: [text_0..text_{n-1} | video_0..video_{n-1}], frames concatenated
  along the latent frame axis of `hidden_states`; attention follows the dual mask (`model.layout`)
  through `Mask2DiTAttnProcessor` and one of the exact backends in `model.attention`.
- any subset of scenes can be clean context: their tokens (text and video) are modulated with the
  timestep-0 embedding, as in the official implementation, and `model.objectives.scene_diffusion_loss` ignores them.
- called without scene arguments, it is exactly the stock single-scene model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import apply_rotary_emb, get_1d_rotary_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock, CogVideoXTransformer3DModel
from diffusers.utils import apply_lora_scale

from model.attention import check_backend, scene_attention
from model.layout import SceneLayout, clean_mask
from model.sequence_parallel import SequenceShard, ShardView, gather_tokens, heads_to_tokens, tokens_to_heads

POSITION_SCHEMES = ("consecutive", "per_scene")
"""consecutive: frame positions run on across scenes (official); per_scene: they restart at 0 in each scene."""


class Mask2DiTAttnProcessor:
    """CogVideoX's joint text-video attention (projections, QK-norm, RoPE on video) with the dual mask."""

    def __init__(self, backend: str = "segmented"):
        self.backend = check_backend(backend)

    def attend(self, query, key, value, layout: SceneLayout) -> torch.Tensor:
        """Dual-mask attention of (B, H, N, D) tensors; the one place a backend is applied."""
        return scene_attention(query, key, value, layout, self.backend)

    def attend_sharded(self, query, key, value, text_local: int, layout: SceneLayout | None, view: ShardView):
        """Ulysses: (B, H, n_local, D) token shards -> attention over the whole sequence for H/P heads
        -> token shards again. Text and video travel separately, so the gathered sequence is in the
        layout's order [all text | all video]."""

        def gather(x):
            text, video = x[:, :, :text_local], x[:, :, text_local:]
            return torch.cat([tokens_to_heads(text, view.shard, view.text_counts),
                              tokens_to_heads(video, view.shard, view.video_counts)], dim=2)  # fmt: skip

        query, key, value = gather(query), gather(key), gather(value)  # (B, H/P, N, D)
        if layout is None or layout.num_scenes == 1:
            out = F.scaled_dot_product_attention(query, key, value)
        else:
            out = self.attend(query, key, value, layout)
        text, video = out.split([sum(view.text_counts), sum(view.video_counts)], dim=2)
        return torch.cat([heads_to_tokens(text, view.shard, view.text_counts),
                          heads_to_tokens(video, view.shard, view.video_counts)], dim=2)  # fmt: skip

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        scene_layout: SceneLayout | None = None,
        sequence_shard: ShardView | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        text_seq_length = encoder_hidden_states.size(1)
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch_size, sequence_length, _ = hidden_states.shape

        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        # (B, N, H*D) -> (B, H, N, D)
        query, key, value = (x.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, text_seq_length:] = apply_rotary_emb(query[:, :, text_seq_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_seq_length:] = apply_rotary_emb(key[:, :, text_seq_length:], image_rotary_emb)

        if sequence_shard is not None:  # this rank's tokens, all heads -> all tokens, H/P heads, and back
            if attention_mask is not None:
                raise ValueError("attention_mask cannot be combined with sequence parallelism")
            hidden_states = self.attend_sharded(query, key, value, text_seq_length, scene_layout, sequence_shard)
        elif scene_layout is None or scene_layout.num_scenes == 1:
            # One scene: the dual mask allows everything, this is stock CogVideoX attention.
            if attention_mask is not None:
                attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
                attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
            hidden_states = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)
        else:
            if attention_mask is not None:
                raise ValueError("attention_mask cannot be combined with a multi-scene layout; the layout is the mask")
            hidden_states = self.attend(query, key, value, scene_layout)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        encoder_hidden_states, hidden_states = hidden_states.split(
            [text_seq_length, hidden_states.size(1) - text_seq_length], dim=1
        )
        return hidden_states, encoder_hidden_states


def _per_scene(
    x: torch.Tensor, lengths: Sequence[int], fn: Callable[[torch.Tensor, int], torch.Tensor]
) -> torch.Tensor:
    """Apply fn(chunk, scene) to each scene's contiguous token chunk of x (B, L, C) and re-join."""
    return torch.cat([fn(chunk, i) for i, chunk in enumerate(x.split(list(lengths), dim=1))], dim=1)


def _scene_modulate(norm, video, text, scene_temb, layout: SceneLayout):
    """CogVideoXLayerNormZero with one timestep embedding per scene: scene_temb is (B, S, C)."""
    shift, scale, gate, enc_shift, enc_scale, enc_gate = norm.linear(norm.silu(scene_temb)).chunk(6, dim=-1)
    video = _per_scene(
        norm.norm(video), layout.video_lengths, lambda x, i: x * (1 + scale[:, i, None]) + shift[:, i, None]
    )
    text = _per_scene(
        norm.norm(text), layout.text_lengths, lambda x, i: x * (1 + enc_scale[:, i, None]) + enc_shift[:, i, None]
    )
    return video, text, gate, enc_gate


def _gated(x: torch.Tensor, gate: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    return _per_scene(x, lengths, lambda chunk, i: chunk * gate[:, i, None])


class Mask2DiTBlock(CogVideoXBlock):
    """CogVideoXBlock whose modulation can differ per scene (clean context scenes use t=0).

    Same parameters as the stock block; with one embedding for all tokens it *is* the stock block.
    """

    def forward(self, hidden_states, encoder_hidden_states, temb, image_rotary_emb=None, attention_kwargs=None):
        if temb.ndim == 2:  # one timestep for every token
            return super().forward(hidden_states, encoder_hidden_states, temb, image_rotary_emb, attention_kwargs)
        attention_kwargs = attention_kwargs or {}
        # Scene lengths of the tokens this rank holds: all of them, or its shard's share.
        layout = attention_kwargs.get("sequence_shard") or attention_kwargs["scene_layout"]
        text_seq_length = encoder_hidden_states.size(1)

        norm_video, norm_text, gate, enc_gate = _scene_modulate(
            self.norm1, hidden_states, encoder_hidden_states, temb, layout
        )
        attn_video, attn_text = self.attn1(
            hidden_states=norm_video, encoder_hidden_states=norm_text, image_rotary_emb=image_rotary_emb,
            **attention_kwargs,
        )  # fmt: skip
        hidden_states = hidden_states + _gated(attn_video, gate, layout.video_lengths)
        encoder_hidden_states = encoder_hidden_states + _gated(attn_text, enc_gate, layout.text_lengths)

        norm_video, norm_text, gate, enc_gate = _scene_modulate(
            self.norm2, hidden_states, encoder_hidden_states, temb, layout
        )
        ff_output = self.ff(torch.cat([norm_text, norm_video], dim=1))
        hidden_states = hidden_states + _gated(ff_output[:, text_seq_length:], gate, layout.video_lengths)
        encoder_hidden_states = encoder_hidden_states + _gated(
            ff_output[:, :text_seq_length], enc_gate, layout.text_lengths
        )
        return hidden_states, encoder_hidden_states


class Mask2DiTTransformer3DModel(CogVideoXTransformer3DModel):
    """The Mask²DiT multi-scene transformer. See the module docstring; forward documents the scene arguments."""

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 30,
        attention_head_dim: int = 64,
        in_channels: int = 16,
        out_channels: int | None = 16,
        flip_sin_to_cos: bool = True,
        freq_shift: int = 0,
        time_embed_dim: int = 512,
        ofs_embed_dim: int | None = None,
        text_embed_dim: int = 4096,
        num_layers: int = 30,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_width: int = 90,
        sample_height: int = 60,
        sample_frames: int = 49,
        patch_size: int = 2,
        patch_size_t: int | None = None,
        temporal_compression_ratio: int = 4,
        max_text_seq_length: int = 226,
        activation_fn: str = "gelu-approximate",
        timestep_activation_fn: str = "silu",
        norm_elementwise_affine: bool = True,
        norm_eps: float = 1e-5,
        spatial_interpolation_scale: float = 1.875,
        temporal_interpolation_scale: float = 1.0,
        use_rotary_positional_embeddings: bool = False,
        use_learned_positional_embeddings: bool = False,
        patch_bias: bool = True,
        attention_backend: str = "segmented",
        position_scheme: str = "consecutive",
    ):
        # The stock signature is restated on purpose: diffusers builds a model from the config keys
        # the constructor names, so `**kwargs` would silently drop a checkpoint's configuration.
        super().__init__(
            num_attention_heads=num_attention_heads, attention_head_dim=attention_head_dim,
            in_channels=in_channels, out_channels=out_channels, flip_sin_to_cos=flip_sin_to_cos,
            freq_shift=freq_shift, time_embed_dim=time_embed_dim, ofs_embed_dim=ofs_embed_dim,
            text_embed_dim=text_embed_dim, num_layers=num_layers, dropout=dropout, attention_bias=attention_bias,
            sample_width=sample_width, sample_height=sample_height, sample_frames=sample_frames,
            patch_size=patch_size, patch_size_t=patch_size_t, temporal_compression_ratio=temporal_compression_ratio,
            max_text_seq_length=max_text_seq_length, activation_fn=activation_fn,
            timestep_activation_fn=timestep_activation_fn, norm_elementwise_affine=norm_elementwise_affine,
            norm_eps=norm_eps, spatial_interpolation_scale=spatial_interpolation_scale,
            temporal_interpolation_scale=temporal_interpolation_scale,
            use_rotary_positional_embeddings=use_rotary_positional_embeddings,
            use_learned_positional_embeddings=use_learned_positional_embeddings, patch_bias=patch_bias,
        )  # fmt: skip
        if position_scheme not in POSITION_SCHEMES:
            raise ValueError(f"position_scheme must be one of {POSITION_SCHEMES}, got {position_scheme!r}")
        for block in self.transformer_blocks:
            block.__class__ = Mask2DiTBlock  # same parameters; only forward learns per-scene modulation
        self.set_scene_attention(attention_backend)
        self._sequence_shard: SequenceShard | None = None

    def enable_sequence_parallel(self, shard: SequenceShard | None) -> None:
        """Shard every sequence over `shard`'s ranks (Ulysses); None turns it off. Not saved with the model."""
        if shard is not None:
            shard.check_heads(self.config.num_attention_heads)
        self._sequence_shard = shard if shard is not None and shard.size > 1 else None

    def set_scene_attention(self, backend: str) -> None:
        """Switch every layer to one attention backend: "segmented" (default), "dense" or "flex"."""
        self.set_attn_processor(Mask2DiTAttnProcessor(check_backend(backend)))
        self.register_to_config(attention_backend=backend)

    # --- scene geometry ----------------------------------------------------------------------

    def scene_layout(
        self, scene_frames: Sequence[int], latent_height: int, latent_width: int, text_lengths: Sequence[int]
    ) -> SceneLayout:
        p, p_t = self.config.patch_size, self.config.patch_size_t or 1
        if any(f % p_t for f in scene_frames):
            raise ValueError(
                f"each scene's latent frames must be a multiple of patch_size_t={p_t}: {list(scene_frames)}"
            )
        tokens_per_frame = (latent_height // p) * (latent_width // p)
        return SceneLayout(tuple(text_lengths), tuple(f // p_t * tokens_per_frame for f in scene_frames))

    def prepare_rotary_emb(
        self, scene_frames: Sequence[int], latent_height: int, latent_width: int, device=None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """3D RoPE (cos, sin) for the concatenated video tokens, positioned as the official pipelines do.

        Spatial positions (CogVideoX 1.0) are `start + i * (stop - start) / n` over the resize-crop
        region of the grid inside the model's base grid (numpy's `linspace(..., endpoint=False)`;
        diffusers' own helper differs whenever the crop does not start at 0). CogVideoX 1.5
        (`patch_size_t`) uses integer positions. Frame positions follow `config.position_scheme`:
        consecutive across scenes (the official choice) or restarting per scene. None for models
        without rotary embeddings (2B).
        """
        if not self.config.use_rotary_positional_embeddings:
            return None
        from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

        cfg = self.config
        p, p_t = cfg.patch_size, cfg.patch_size_t or 1
        grid_h, grid_w = latent_height // p, latent_width // p
        if cfg.patch_size_t is None:
            (top, left), (bottom, right) = get_resize_crop_region_for_grid(
                (grid_h, grid_w), cfg.sample_width // p, cfg.sample_height // p
            )
            rows = np.linspace(top, bottom, grid_h, endpoint=False, dtype=np.float32)
            cols = np.linspace(left, right, grid_w, endpoint=False, dtype=np.float32)
        else:
            rows, cols = np.arange(grid_h, dtype=np.float32), np.arange(grid_w, dtype=np.float32)
        frames = [f // p_t for f in scene_frames]
        if cfg.position_scheme == "consecutive":
            times = np.arange(sum(frames), dtype=np.float32)
        else:
            times = np.concatenate([np.arange(f, dtype=np.float32) for f in frames])
        cos, sin = rotary_embedding_3d(cfg.attention_head_dim, times, rows, cols)
        return cos.to(device), sin.to(device)

    def _embed(self, text: torch.Tensor, video: torch.Tensor, scene_frames: Sequence[int]) -> torch.Tensor:
        """Patch-embed text and video. Multi-scene sin-cos positions (2B) follow the position scheme."""
        embed = self.patch_embed
        if len(scene_frames) == 1 or not (embed.use_positional_embeddings or embed.use_learned_positional_embeddings):
            return embed(text, video)
        if embed.use_learned_positional_embeddings:
            raise ValueError("multi-scene input is not supported with learned positional embeddings (CogVideoX-5B-I2V)")
        batch, frames, channels, height, width = video.shape
        tokens = embed.proj(video.reshape(-1, channels, height, width))  # (B*F, C, h, w)
        tokens = tokens.view(batch, frames, *tokens.shape[1:]).flatten(3).transpose(2, 3).flatten(1, 2)
        ratio = embed.temporal_compression_ratio
        spans = [sum(scene_frames)] if self.config.position_scheme == "consecutive" else list(scene_frames)
        positions = torch.cat(
            [embed._get_positional_embeddings(height, width, (f - 1) * ratio + 1, device=video.device)[:, embed.max_text_seq_length :] for f in spans],
            dim=1,
        )  # fmt: skip
        return torch.cat([embed.text_proj(text), tokens + positions.to(tokens.dtype)], dim=1)

    # --- forward -----------------------------------------------------------------------------

    @apply_lora_scale("attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: int | float | torch.LongTensor,
        timestep_cond: torch.Tensor | None = None,
        ofs: int | float | torch.LongTensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
        scene_frames: Sequence[int] | None = None,
        text_lengths: Sequence[int] | None = None,
        clean_scenes: torch.Tensor | Sequence[int] | None = None,
    ) -> tuple[torch.Tensor] | Transformer2DModelOutput:
        """Stock CogVideoX arguments, plus:

        scene_frames: latent frames of each scene, in order; `hidden_states` holds them concatenated
            on the frame axis (B, sum(scene_frames), C, H, W). Default: one scene.
        text_lengths: text tokens of each scene; `encoder_hidden_states` holds them concatenated.
            Default: an equal split.
        clean_scenes: scenes that are clean context: scene indices (for the whole batch), or a
            bool tensor (S,) or (B, S). Their tokens are modulated with the t=0 embedding.
        image_rotary_emb: from `prepare_rotary_emb(scene_frames, H, W)` for rotary models.
        """
        batch_size, num_frames, _, height, width = hidden_states.shape
        scene_frames = list(scene_frames) if scene_frames is not None else [num_frames]
        if sum(scene_frames) != num_frames:
            raise ValueError(
                f"scene_frames {scene_frames} sum to {sum(scene_frames)}, hidden_states has {num_frames} frames"
            )
        text_total = encoder_hidden_states.shape[1]
        if text_lengths is None:
            if text_total % len(scene_frames):
                raise ValueError(
                    f"{text_total} text tokens cannot be split equally over {len(scene_frames)} scenes; pass text_lengths"
                )
            text_lengths = [text_total // len(scene_frames)] * len(scene_frames)
        if sum(text_lengths) != text_total:
            raise ValueError(
                f"text_lengths {list(text_lengths)} sum to {sum(text_lengths)}, encoder_hidden_states has {text_total}"
            )
        layout = self.scene_layout(scene_frames, height, width, text_lengths)

        # 1. Time embedding: one per sample, or one per scene when some scenes are clean context.
        emb = self._time_embedding(timestep, timestep_cond, ofs, hidden_states.dtype)
        clean = clean_mask(clean_scenes, batch_size, layout.num_scenes, hidden_states.device)
        if clean is not None and bool(clean.any()):
            zero = torch.zeros_like(torch.as_tensor(timestep, device=hidden_states.device).expand(batch_size))
            emb_clean = self._time_embedding(zero, timestep_cond, ofs, hidden_states.dtype)
            emb = torch.where(clean[..., None], emb_clean[:, None], emb.expand(batch_size, -1)[:, None])  # (B, S, C)

        # 2. Patch embedding
        tokens = self.embedding_dropout(self._embed(encoder_hidden_states, hidden_states, scene_frames))
        encoder_hidden_states, hidden_states = tokens[:, :text_total], tokens[:, text_total:]

        # 3. Transformer blocks (with sequence parallelism, on this rank's chunk of text and video)
        attention_kwargs = {**(attention_kwargs or {}), "scene_layout": layout}
        shard, lengths = self._sequence_shard, layout
        if shard is not None:
            lengths = attention_kwargs["sequence_shard"] = ShardView.of(layout, shard)
            encoder_hidden_states, hidden_states = shard.local(encoder_hidden_states), shard.local(hidden_states)
            if image_rotary_emb is not None:
                image_rotary_emb = tuple(shard.local(x, dim=0) for x in image_rotary_emb)
        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states, encoder_hidden_states = self._gradient_checkpointing_func(
                    block, hidden_states, encoder_hidden_states, emb, image_rotary_emb, attention_kwargs
                )
            else:
                hidden_states, encoder_hidden_states = block(
                    hidden_states, encoder_hidden_states, emb, image_rotary_emb, attention_kwargs
                )
        hidden_states = self.norm_final(hidden_states)

        # 4. Output modulation and projection (per scene when scenes have their own timestep)
        if emb.ndim == 2:
            hidden_states = self.norm_out(hidden_states, temb=emb)
        else:
            shift, scale = self.norm_out.linear(self.norm_out.silu(emb)).chunk(2, dim=-1)
            hidden_states = _per_scene(
                self.norm_out.norm(hidden_states), lengths.video_lengths,
                lambda x, i: x * (1 + scale[:, i, None]) + shift[:, i, None],
            )  # fmt: skip
        hidden_states = self.proj_out(hidden_states)
        if shard is not None:  # every rank gets the whole prediction
            hidden_states = gather_tokens(hidden_states, shard, lengths.video_counts)

        # 5. Unpatchify: (B, tokens, p*p*C) -> (B, F, C, H, W)
        p, p_t = self.config.patch_size, self.config.patch_size_t
        if p_t is None:
            output = hidden_states.reshape(batch_size, num_frames, height // p, width // p, -1, p, p)
            output = output.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)
        else:
            output = hidden_states.reshape(batch_size, num_frames // p_t, height // p, width // p, -1, p_t, p, p)
            output = output.permute(0, 1, 5, 4, 2, 6, 3, 7).flatten(6, 7).flatten(4, 5).flatten(1, 2)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _time_embedding(self, timestep, timestep_cond, ofs, dtype) -> torch.Tensor:
        emb = self.time_embedding(self.time_proj(timestep).to(dtype=dtype), timestep_cond)
        if self.ofs_embedding is not None:
            emb = emb + self.ofs_embedding(self.ofs_proj(ofs).to(dtype=dtype))
        return emb


def rotary_embedding_3d(
    head_dim: int, times: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """CogVideoX's 3D RoPE for given positions: a quarter of each head's channels rotate with the
    frame position, 3/8 with the row and 3/8 with the column. Returns (cos, sin), each
    (T * H * W, head_dim), tokens in (frame, row, column) order."""
    dims = (head_dim // 4, head_dim // 8 * 3, head_dim // 8 * 3)
    axes = [get_1d_rotary_pos_embed(d, pos, use_real=True) for d, pos in zip(dims, (times, rows, cols))]
    shape = (len(times), len(rows), len(cols))

    def combine(t, h, w):  # (T, d_t), (H, d_h), (W, d_w) -> (T*H*W, d_t + d_h + d_w)
        grids = (t[:, None, None].expand(*shape, -1), h[None, :, None].expand(*shape, -1),
                 w[None, None].expand(*shape, -1))  # fmt: skip
        return torch.cat(grids, dim=-1).reshape(-1, sum(dims))

    return combine(*(a[0] for a in axes)), combine(*(a[1] for a in axes))
