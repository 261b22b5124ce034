"""The CogVideoX multi-scene pipeline's old import path: the code is `model.cogvideox_pipeline`
(the parts every backbone shares are `model.multiscene`). Kept so that `from model.pipeline import
...` written before the rename still works; new code imports those modules or `model`."""

from model.cogvideox_pipeline import REQUIRED_COMPONENTS, Mask2DiTPipeline, check_model_folder  # noqa: F401
from model.multiscene import MultiSceneOutput, expand_story, scene_negatives  # noqa: F401
from model.weights import ModelFolderError  # noqa: F401
