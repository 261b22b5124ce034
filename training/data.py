"""Training samples from curation manifests: checked up front, drawn deterministically per sample index.

- pretrain: each sample concatenates `scenes` single shots drawn from *different* source videos
  (repeats only when there are fewer videos than scenes), each with its own caption.
- sft: each sample is one curated combination with its per-shot captions (annotation status ok).

Frames: `num_frames` per scene, centre-cropped and resized to height x width. Windows
(`data.frame_window`): "official" as the official datasets (pretrain: stride `max_stride` inside
the 5-95% part of the shot; SFT: the largest stride <= `max_stride` that fits; random starts),
or "middle" (one fixed window per shot at the stride nearest `target_fps`, for precomputed latents).
Sample i, windows included, is a pure function of (seed, i), so a resumed run sees exactly the
samples it would have.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from manifests.frames import VideoReadError, max_stride_window, read_shot_frames
from manifests.io import ManifestError, check_finite, read_table
from training.config import DataConfig


class DataError(ValueError):
    """The manifest cannot feed this training run; the message has the counts."""


@dataclass(frozen=True)
class Scene:
    shot: dict  # a shots.parquet row
    caption: str
    start: int  # first frame, offset within the shot
    stride: int

    def frame_offsets(self, num_frames: int) -> list[int]:
        return [self.start + i * self.stride for i in range(num_frames)]

    @property
    def content_key(self) -> str:
        return f"{self.shot['shot_id']}:{self.start}:{self.stride}"


def frame_plan(shot_frames: int, fps: float, config: DataConfig) -> tuple[int, int] | None:
    """(start, stride) of the middle window, or None when the shot is too short even at stride 1."""
    stride = max(1, min(config.max_stride, round(fps / config.target_fps)))
    while stride >= 1:
        span = (config.num_frames - 1) * stride + 1
        if span <= shot_frames:
            return (shot_frames - span) // 2, stride
        stride -= 1
    return None


NUMERIC_SHOT_COLUMNS = ("num_frames", "fps", "start_frame", "end_frame", "width", "height")
PRETRAIN_KEEP = (0.05, 0.95)  # the official pretrain dataset samples inside this part of a shot


def official_window(shot_frames: int, config: DataConfig, rng: np.random.Generator) -> tuple[int, int] | None:
    """(start, stride) as the official datasets draw them. Pretrain: stride `max_stride`, start uniform
    in the 5-95% part of the shot; a shot too short for that falls back to the SFT rule (the
    official loader would take fewer frames; scenes here have `num_frames`). SFT: the largest
    stride <= max_stride at which the frames fit, start uniform."""
    if config.stage == "pretrain":
        end = int(PRETRAIN_KEEP[1] * shot_frames)
        first, last = int(PRETRAIN_KEEP[0] * end), end - ((config.num_frames - 1) * config.max_stride + 1)
        if last >= first:
            return int(rng.integers(first, last + 1)), config.max_stride
    return max_stride_window(shot_frames, config.num_frames, config.max_stride, rng)


def draw_windows(scenes: list[Scene], config: DataConfig, seed: int, index: int) -> list[Scene]:
    """The scenes of sample `index` with their frame windows for this draw."""
    if config.frame_window == "middle":
        return scenes
    drawn = []
    for position, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, index, position, 5])
        start, stride = official_window(int(scene.shot["num_frames"]), config, rng)
        drawn.append(replace(scene, start=start, stride=stride))
    return drawn


@dataclass
class ManifestReport:
    stage: str
    candidates: int = 0
    usable: int = 0
    videos: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> rows

    def lines(self) -> list[str]:
        head = f"manifest check ({self.stage}): {self.usable} usable of {self.candidates} from {self.videos} videos"
        return [head] + [f"  dropped {n}: {reason}" for reason, n in self.dropped.most_common()]


def _caption_ok(status: str, config: DataConfig) -> bool:
    return status == "ok" or (config.allow_uncaptioned and status in ("unannotated", "missing"))


def _scene(shot: dict, caption, config: DataConfig, report: ManifestReport, exists: dict) -> Scene | None:
    path = shot["source_path"]
    if path not in exists:
        exists[path] = Path(path).is_file()
    if not exists[path]:
        report.dropped["source video missing"] += 1
        return None
    plan = frame_plan(int(shot["num_frames"]), float(shot["fps"]), config)
    if plan is None:
        report.dropped[f"shot shorter than {config.num_frames} frames"] += 1
        return None
    return Scene(shot, caption if isinstance(caption, str) else "", *plan)


def load_samples(config: DataConfig) -> tuple[list[list[Scene]], ManifestReport]:
    """Usable samples (pretrain: one scene each, combined later; sft: one combination each)."""
    report = ManifestReport(config.stage)
    caption_table = "shot_captions" if config.stage == "pretrain" else "annotations"
    if not (Path(config.manifest) / f"{caption_table}.parquet").exists() and not config.allow_uncaptioned:
        how = "with --caption-shots " if config.stage == "pretrain" else ""
        raise DataError(f"manifest {config.manifest} has no {caption_table}.parquet: run the curation job {how}with "
                        "GEMINI_API_KEY set (or set data.allow_uncaptioned for a smoke run)")  # fmt: skip
    try:
        shots = read_table(config.manifest, "shots")
        captions = read_table(config.manifest, caption_table, missing_ok=config.allow_uncaptioned)
        combos = read_table(config.manifest, "combinations") if config.stage == "sft" else None
        check_finite(shots, "shots", NUMERIC_SHOT_COLUMNS, config.manifest)
    except ManifestError as err:
        raise DataError(f"manifest {config.manifest} cannot be used: {err}") from err
    exists: dict[str, bool] = {}
    samples: list[list[Scene]] = []
    if config.stage == "pretrain":
        table = shots[shots["status"] == "ok"].merge(captions[["shot_id", "caption", "status"]], on="shot_id",
                                                     how="left", suffixes=("", "_caption"))  # fmt: skip
        report.candidates = len(table)
        for row in table.to_dict("records"):
            status = row.get("status_caption")
            status = status if isinstance(status, str) else "missing"
            if not _caption_ok(status, config):
                report.dropped[f"caption {status}"] += 1
                continue
            scene = _scene(row, row.get("caption"), config, report, exists)
            if scene:
                samples.append([scene])
    else:
        by_shot = {row["shot_id"]: row for row in shots.to_dict("records")}
        notes = {row["combination_id"]: row for row in captions.to_dict("records")}
        ok = combos[combos["status"] == "ok"]
        report.candidates = len(ok)
        for combo in ok.itertuples():
            note = notes.get(combo.combination_id)
            status = note["status"] if note else "missing"
            if not _caption_ok(status, config):
                report.dropped[f"annotation {status}"] += 1
                continue
            if len(combo.shot_ids) != config.scenes:
                report.dropped[f"{len(combo.shot_ids)} shots, data.scenes is {config.scenes}"] += 1
                continue
            texts = list(note["captions"]) if note and note["captions"] is not None and len(note["captions"]) else []
            texts = texts or [""] * len(combo.shot_ids)
            scenes = [_scene(by_shot[s], t, config, report, exists) if s in by_shot else None
                      for s, t in zip(combo.shot_ids, texts)]  # fmt: skip
            if all(scenes):
                samples.append(scenes)
    report.usable = len(samples)
    report.videos = len({s[0].shot["video_id"] for s in samples})
    if not samples:
        raise DataError("no usable training samples:\n" + "\n".join(report.lines()))
    return samples, report


class PretrainSampler:
    """Sample i: `scenes` shots from distinct videos (uniform over videos, then over their shots)."""

    def __init__(self, samples: list[list[Scene]], scenes: int, seed: int):
        videos: dict[str, list[int]] = {}
        for i, sample in enumerate(samples):
            videos.setdefault(sample[0].shot["video_id"], []).append(i)
        self.by_video = [np.asarray(v) for v in videos.values()]
        self.samples, self.scenes, self.seed = samples, scenes, seed

    def __call__(self, index: int) -> list[Scene]:
        rng = np.random.default_rng([self.seed, index])
        count = len(self.by_video)
        videos = list(rng.choice(count, size=min(self.scenes, count), replace=False))
        videos += list(rng.integers(0, count, size=self.scenes - len(videos)))  # only when unavoidable
        return [self.samples[int(rng.choice(self.by_video[v]))][0] for v in videos]


class SFTSampler:
    """Sample i: combination perm_epoch[i % n], a fresh permutation each epoch."""

    def __init__(self, samples: list[list[Scene]], seed: int):
        self.samples, self.seed = samples, seed
        self._epoch, self._order = -1, None

    def __call__(self, index: int) -> list[Scene]:
        epoch, position = divmod(index, len(self.samples))
        if epoch != self._epoch:
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.samples))
        return self.samples[int(self._order[position])]


def resize_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, h, w, 3) -> (T, height, width, 3): centre crop to the aspect ratio, then area resize."""
    import cv2

    h, w = frames.shape[1:3]
    scale = max(height / h, width / w)
    crop_h, crop_w = min(h, math.ceil(height / scale)), min(w, math.ceil(width / scale))
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    frames = frames[:, top : top + crop_h, left : left + crop_w]
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


SUBSTITUTES = 8  # unreadable samples replaced in a row before the sample is an error
SUBSTITUTE_STRIDE = 10**12  # substitute k of sample i is drawn as sample i + k * stride


class SceneDataset(torch.utils.data.Dataset):
    """Map-style over an infinite stream of sample indices; item i is deterministic."""

    def __init__(self, config: DataConfig, samples: list[list[Scene]], seed: int, load_frames: bool = True):
        self.config, self.seed, self.load_frames = config, seed, load_frames
        self.draw = (
            PretrainSampler(samples, config.scenes, seed) if config.stage == "pretrain" else SFTSampler(samples, seed)
        )

    def __len__(self) -> int:
        return 2**62  # indices come from StreamSampler

    def __getitem__(self, index: int) -> dict:
        """Sample `index`. A sample whose source cannot be read (changed or truncated since curation)
        is replaced by a substitute drawn from (seed, index, attempt): the same on every run and
        resume. The item lists what it skipped, so the trainer counts and reports it."""
        skipped = []
        for attempt in range(SUBSTITUTES + 1):
            draw = index + attempt * SUBSTITUTE_STRIDE
            scenes = draw_windows(self.draw(draw), self.config, self.seed, draw)
            item = {"index": index, "captions": [s.caption for s in scenes], "keys": [s.content_key for s in scenes],
                    "video_ids": [s.shot["video_id"] for s in scenes], "skipped": skipped}  # fmt: skip
            if not self.load_frames:
                return item
            try:
                frames = [
                    resize_crop(read_shot_frames(s.shot, indices=s.frame_offsets(self.config.num_frames),
                                                 max_side=max(self.config.height, self.config.width) * 2),
                                self.config.height, self.config.width)
                    for s in scenes
                ]  # fmt: skip
            except VideoReadError as err:
                skipped.append(str(err))
                continue
            item["frames"] = torch.from_numpy(np.stack(frames))  # (S, T, H, W, 3) uint8
            return item
        raise DataError(
            f"sample {index} and {SUBSTITUTES} substitutes could not be read; the sources changed since curation, "
            f"re-run curation on them. Last errors: {'; '.join(skipped[-3:])}"
        )


class StreamSampler(torch.utils.data.Sampler):
    """Global sample indices start, start+1, ... split over ranks (rank r takes every world-th)."""

    def __init__(self, start: int, rank: int, world: int):
        self.start, self.rank, self.world = start, rank, world

    def __iter__(self):
        index = self.start + self.rank
        while True:
            yield index
            index += self.world

    def __len__(self) -> int:
        return 2**62


def collate(items: list[dict]) -> dict:
    batch = {key: [item[key] for item in items] for key in ("index", "captions", "keys", "video_ids", "skipped")}
    if "frames" in items[0]:
        batch["frames"] = torch.stack([item["frames"] for item in items])  # (B, S, T, H, W, 3)
    return batch
