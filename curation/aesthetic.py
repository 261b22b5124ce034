"""Aesthetics: `aesthetic` (LAION's predictor, 1-10) when --aesthetic-checkpoint is given, and the
filter --min-aesthetic (off by default: the score is stored for re-thresholding in pandas).

The model is `model.aesthetic.AestheticScorer` (the published MLP over CLIP ViT-L/14 image
embeddings, --aesthetic-clip); it scores a few frames of each shot that the detection pass kept,
cropped to the active picture (black bars would lower the score of a good picture), and the shot
gets their mean. It runs in Ray actors fed by `curation.pass_models.PassModel` (a GPU each where the
cluster has them), before the video is committed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curation.config import CurationConfig, ShotsConfig
from curation.shot_filters import ShotEvidence
from curation.shot_frames import FrameSpec
from curation.stage import Remote, Resources

if TYPE_CHECKING:  # the driver imports this module for its filter: the pass's modules load in the actors
    from curation.pass_models import ShotBatch

FRAMES, MAX_SIDE = 3, 448  # frames per shot, spread over it; CLIP then takes a 224 centre crop


class AestheticRemote(Remote):
    name, actors = "aesthetic", True
    about = "LAION aesthetic score of frames the detection pass kept (Ray actors, CLIP ViT-L/14 + MLP)"

    def __init__(self, config: ShotsConfig, resources: Resources):
        self.config, self.resources = config, resources
        self.spec = FrameSpec(count=FRAMES, rule="uniform", max_side=MAX_SIDE)
        self.scorer = None  # loaded in the actor, never pickled

    def setup(self) -> None:
        import torch

        from model.aesthetic import AestheticScorer

        device = "cuda" if self.resources.gpus > 0 and torch.cuda.is_available() else "cpu"
        self.scorer = AestheticScorer.load(self.config.aesthetic_checkpoint, self.config.aesthetic_clip, device)

    def __getstate__(self):
        return self.__dict__ | {"scorer": None}

    def process(self, item: ShotBatch) -> dict[tuple[int, int], dict]:
        from curation.pass_models import shot_images
        from manifests.frames import active_picture

        found = {}
        for shot in item.shots:
            box = dict(zip(("crop_x", "crop_y", "crop_w", "crop_h"), shot.crop)) | {"width": item.width,
                                                                                  "height": item.height}  # fmt: skip
            frames = np.stack([active_picture(image, box) for image in shot_images(self, shot)])
            found[(shot.start, shot.end)] = {"aesthetic": float(np.mean(self.scorer.score(frames)))}
        return found


def low_aesthetic(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a shot scoring under --min-aesthetic (when scored and the threshold is set)."""
    score, threshold = shot.values.get("aesthetic"), config.shots.min_aesthetic
    if score is None or threshold <= 0 or score >= threshold:
        return None
    return f"aesthetic score {score:.2f} under --min-aesthetic {threshold:g}"
