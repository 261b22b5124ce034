"""Networks: the Mask²DiT dual-mask transformer (on diffusers' CogVideoX) and its attention backends.

from model import Mask2DiTTransformer3DModel
model = Mask2DiTTransformer3DModel.from_pretrained("CogVideoX-5b", subfolder="transformer")
out = model(latents, text, t, scene_frames=[13, 13, 13], clean_scenes=[0, 1],
            image_rotary_emb=model.prepare_rotary_emb([13, 13, 13], 60, 90)).sample
"""

from model.attention import BACKENDS, scene_attention
from model.layout import SceneLayout
from model.transformer import Mask2DiTAttnProcessor, Mask2DiTTransformer3DModel, scene_diffusion_loss

__all__ = [
    "BACKENDS",
    "Mask2DiTAttnProcessor",
    "Mask2DiTTransformer3DModel",
    "SceneLayout",
    "scene_attention",
    "scene_diffusion_loss",
]
