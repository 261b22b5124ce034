"""Burned-in text (subtitles, captions, channel logos, watermarks): `text_area`, `text`, and the
`text` filter.

PP-OCRv4 text detection and recognition, from the models inside the `rapidocr-onnxruntime` wheel
(ONNX Runtime; CUDA where onnxruntime-gpu and a GPU are present; no network), on a few frames of
each shot that the detection pass kept (`--text-frames` at `--text-max-side`, no second decode),
in Ray actors fed by `curation.pass_models.PassModel` before the video is committed. Detection
alone fires on plain coloured shapes; only boxes whose recognised string scores at least
--text-min-score (and has two characters or more) count. `text_area` is the largest fraction of the
shot's active picture (curation/bars.py) that such boxes cover in one frame, `text` their strings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from curation.config import CurationConfig, ShotsConfig
from curation.shot_filters import ShotEvidence
from curation.shot_frames import FrameSpec
from curation.stage import Remote, Resources

if TYPE_CHECKING:  # the driver imports this module for its filter: the pass's modules load in the actors
    from curation.pass_models import PassShot, ShotBatch


def text_spec(config: ShotsConfig) -> FrameSpec:
    """The frames OCR reads per shot: spread over the shot, upright RGB, long side --text-max-side."""
    return FrameSpec(count=config.text_frames, rule="uniform", max_side=config.text_max_side)


def text_found(lines: list, scale: float, crop: tuple[int, int, int, int], min_score: float) -> tuple[float, list[str]]:
    """(fraction of the active picture the kept boxes cover, their strings) for one frame's OCR
    lines [(4 corner points, text, score)], boxes scaled by `scale` to source pixels."""
    x0, y0, w, h = crop
    covered, strings = 0.0, []
    for points, string, score in lines or []:
        string = str(string).strip()
        if float(score) < min_score or len(string) < 2:
            continue
        box = np.asarray(points, dtype=np.float64) * scale
        left, top = max(box[:, 0].min(), x0), max(box[:, 1].min(), y0)
        right, bottom = min(box[:, 0].max(), x0 + w), min(box[:, 1].max(), y0 + h)
        covered += max(0.0, right - left) * max(0.0, bottom - top)
        strings.append(string)
    return min(1.0, covered / max(w * h, 1)), strings


class TextRemote(Remote):
    """PP-OCRv4 in Ray actors (one engine each, set up once)."""

    name, actors = "text", True
    about = "burned-in text: PP-OCRv4 on frames the detection pass kept (Ray actors, ONNX Runtime)"

    def __init__(self, config: ShotsConfig, resources: Resources):
        self.config, self.resources = config, resources
        self.spec = text_spec(config)
        self.engine = None  # loaded in the actor, never pickled

    def setup(self) -> None:
        from rapidocr_onnxruntime import RapidOCR

        cuda = False
        if self.resources.gpus > 0:
            import onnxruntime

            cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        # Read at the size the frames come in (the package's default upscales so the short side is 736).
        self.engine = RapidOCR(det_use_cuda=cuda, cls_use_cuda=cuda, rec_use_cuda=cuda, print_verbose=False,
                               det_limit_type="max", det_limit_side_len=self.config.text_max_side)  # fmt: skip

    def __getstate__(self):
        return self.__dict__ | {"engine": None}

    def process(self, item: ShotBatch) -> dict[tuple[int, int], dict]:
        return {(shot.start, shot.end): self.read(shot, item.width) for shot in item.shots}

    def read(self, shot: PassShot, width: int) -> dict:
        from curation.pass_models import shot_images

        area, strings = 0.0, []
        for image in shot_images(self, shot):
            lines, _ = self.engine(np.ascontiguousarray(image[:, :, ::-1]), use_cls=False)
            found, words = text_found(lines, width / image.shape[1], shot.crop, self.config.text_min_score)
            area = max(area, found)
            strings += [w for w in words if w not in strings]
        return {"text_area": float(area), "text": strings}


def overlay(shot: ShotEvidence, config: CurationConfig) -> str | None:
    """The reason to flag a shot with burned-in text over --max-text-area of its active picture."""
    area = shot.values.get("text_area")
    threshold = config.shots.max_text_area
    if area is None or area <= threshold:
        return None
    words = "; ".join(shot.values.get("text") or [])[:80]
    return f"text over {area:.2%} of the picture (--max-text-area {threshold:g}): {words!r}"
