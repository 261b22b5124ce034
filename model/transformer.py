"""The CogVideoX Mask²DiT transformer's old import path: the code is `model.cogvideox` (renamed so
that CogVideoX's files say so beside Wan's). Kept so that `from model.transformer import ...`
written before the rename still works; new code imports `model.cogvideox` or `model`."""

from model.cogvideox import (  # noqa: F401
    POSITION_SCHEMES,
    Mask2DiTAttnProcessor,
    Mask2DiTBlock,
    Mask2DiTTransformer3DModel,
    rotary_embedding_3d,
)
