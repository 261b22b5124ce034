"""Networks: the Mask²DiT dual-mask transformers (on diffusers' CogVideoX and Wan) and their attention backends.

from model import Mask2DiTTransformer3DModel
model = Mask2DiTTransformer3DModel.from_pretrained("CogVideoX-5b", subfolder="transformer")
out = model(latents, text, t, scene_frames=[13, 13, 13], clean_scenes=[0, 1],
            image_rotary_emb=model.prepare_rotary_emb([13, 13, 13], 60, 90)).sample

Names are imported on first use: `python -m model.generate --help` must not wait for diffusers.
"""

from manifests import lazy_names

_HOMES = {
    "BACKENDS": "model.attention",
    "scene_attention": "model.attention",
    "SceneLayout": "model.layout",
    "Mask2DiTAttnProcessor": "model.cogvideox",
    "Mask2DiTTransformer3DModel": "model.cogvideox",
    "scene_diffusion_loss": "model.objectives",
    "Mask2DiTWanTransformer3DModel": "model.wan",
    "WanSceneLayout": "model.layout",
    "family_of": "model.families",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_names("model", _HOMES)
