"""Training samples from curation manifests: checked up front, drawn deterministically per sample index.

What differs between the stages lives in one class each (`PretrainData`, `SFTData`):
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

import numpy as np
import torch

from manifests.corpus import corpus_duplicates
from manifests.frames import VideoReadError, read_shot_frames
from manifests.io import ManifestError, check_finite, read_table
from manifests.sampling import max_stride_window, middle_window
from manifests.schema import Status
from manifests.store import location
from training.config import DataConfig


class DataError(ValueError):
    """The manifest cannot feed this training run; the message has the counts."""


@dataclass(frozen=True)
class Scene:
    shot: dict  # a shots.parquet row
    caption: str
    start: int  # first frame, offset within the shot
    stride: int
    frames: int = 0  # frames this scene takes (data.scene_frames=from_shots); 0: data.num_frames

    def frame_offsets(self, num_frames: int) -> list[int]:
        return [self.start + i * self.stride for i in range(self.frames or num_frames)]

    @property
    def content_key(self) -> str:
        key = f"{self.shot['shot_id']}:{self.start}:{self.stride}"
        return f"{key}:{self.frames}" if self.frames else key


def frame_plan(shot_frames: int, fps: float, config: DataConfig, frames: int | None = None) -> tuple[int, int] | None:
    """(start, stride) of the middle window of `frames` (default num_frames), or None when the shot
    is too short even at stride 1."""
    stride = max(1, min(config.max_stride, round(fps / config.target_fps)))
    return middle_window(shot_frames, frames or config.num_frames, stride)


def scene_frame_count(shot_frames: int, fps: float, config: DataConfig) -> int:
    """Frames a scene takes from its shot: num_frames with scene_frames=equal; with from_shots, as
    many as the shot supports at the stride this config would use (the pretrain window's part of the
    shot for official pretrain windows), in the VAE's 4k+1 steps, capped by num_frames; shots too
    short for min_frames at that stride step the stride down. 0: unusable."""
    if config.scene_frames == "equal":
        return config.num_frames if frame_plan(shot_frames, fps, config) else 0
    usable = stage_of(config).usable_frames(shot_frames) if config.frame_window == "official" else shot_frames
    first = (
        config.max_stride
        if config.frame_window == "official"
        else max(1, min(config.max_stride, round(fps / config.target_fps)))
    )
    for stride in range(first, 0, -1):
        available = (usable - 1) // stride + 1 if usable > 0 else 0
        frames = min(config.num_frames, (available - 1) // 4 * 4 + 1) if available else 0
        if frames >= config.min_frames:
            return frames
    return 0


NUMERIC_SHOT_COLUMNS = ("num_frames", "fps", "start_frame", "end_frame", "width", "height")
PRETRAIN_KEEP = (0.05, 0.95)  # the official pretrain dataset samples inside this part of a shot


def official_window(
    shot_frames: int, config: DataConfig, rng: np.random.Generator, frames: int | None = None
) -> tuple[int, int] | None:
    """(start, stride) as the official datasets draw them (see each stage's `window`)."""
    return stage_of(config).window(shot_frames, config, rng, frames or config.num_frames)


def draw_windows(scenes: list[Scene], config: DataConfig, seed: int, index: int) -> list[Scene]:
    """The scenes of sample `index` with their frame windows for this draw."""
    if config.frame_window == "middle":
        return scenes
    drawn = []
    for position, scene in enumerate(scenes):
        rng = np.random.default_rng([seed, index, position, 5])
        start, stride = official_window(int(scene.shot["num_frames"]), config, rng, scene.frames or None)
        drawn.append(replace(scene, start=start, stride=stride))
    return drawn


@dataclass
class ManifestReport:
    stage: str
    candidates: int = 0
    usable: int = 0
    videos: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> rows
    scene_lengths: Counter = field(default_factory=Counter)  # frames per scene -> scenes (from_shots)

    def lines(self) -> list[str]:
        head = f"manifest check ({self.stage}): {self.usable} usable of {self.candidates} from {self.videos} videos"
        lines = [head] + [f"  dropped {n}: {reason}" for reason, n in self.dropped.most_common()]
        if self.scene_lengths:
            lengths = ", ".join(f"{frames}: {n}" for frames, n in sorted(self.scene_lengths.items()))
            lines.append(f"  scene lengths (frames: scenes), the buckets batches are grouped by: {lengths}")
        return lines


def _caption_ok(status: str, config: DataConfig) -> bool:
    return status == Status.OK or (config.allow_uncaptioned and status in (Status.UNANNOTATED, "missing"))


def _scene(shot: dict, caption, config: DataConfig, report: ManifestReport, exists: dict) -> Scene | None:
    path = shot["source_path"]
    if path not in exists:
        exists[path] = location(path).is_file()
    if not exists[path]:
        report.dropped["source video missing"] += 1
        return None
    frames = scene_frame_count(int(shot["num_frames"]), float(shot["fps"]), config)
    if not frames:
        least = config.num_frames if config.scene_frames == "equal" else config.min_frames
        report.dropped[f"shot shorter than {least} frames"] += 1
        return None
    plan = frame_plan(int(shot["num_frames"]), float(shot["fps"]), config, frames)
    scene_frames = frames if config.scene_frames == "from_shots" else 0
    return Scene(shot, caption if isinstance(caption, str) else "", *plan, frames=scene_frames)


def load_samples(config: DataConfig) -> tuple[list[list[Scene]], ManifestReport]:
    """Usable samples (pretrain: one scene each, combined later; sft: one combination each)."""
    stage = stage_of(config)
    report = ManifestReport(config.stage)
    if not (location(config.manifest) / f"{stage.caption_table}.parquet").exists() and not config.allow_uncaptioned:
        raise DataError(f"manifest {config.manifest} has no {stage.caption_table}.parquet: run the curation job "
                        f"{stage.curation_hint}with GEMINI_API_KEY set (or set data.allow_uncaptioned for a smoke run)")  # fmt: skip
    try:
        shots = read_table(config.manifest, "shots")
        captions = read_table(config.manifest, stage.caption_table, missing_ok=config.allow_uncaptioned)
        combos = read_table(config.manifest, "combinations") if stage.needs_combinations else None
        check_finite(shots, "shots", NUMERIC_SHOT_COLUMNS, config.manifest)
    except ManifestError as err:
        raise DataError(f"manifest {config.manifest} cannot be used: {err}") from err
    if not stage.needs_combinations:  # pretraining: a shot repeated elsewhere in the corpus is used once
        repeats = corpus_duplicates(config.manifest)
        if repeats:
            report.dropped["repeats a shot elsewhere (python -m curation.dedup)"] += int(
                shots["shot_id"].isin(repeats).sum()
            )
            shots = shots[~shots["shot_id"].isin(repeats)]
    samples = stage.samples(shots, captions, combos, config, report, {})
    report.usable = len(samples)
    if config.scene_frames == "from_shots":
        report.scene_lengths.update(scene.frames for sample in samples for scene in sample)
    report.videos = len({s[0].shot["video_id"] for s in samples})
    if not samples:
        raise DataError("no usable training samples:\n" + "\n".join(report.lines()))
    return samples, report


class PretrainData:
    """Stage 1: single shots with their own captions (shot_captions), `scenes` of them from distinct
    videos concatenated per sample. Official windows: stride max_stride inside the 5-95% part of
    the shot (a shot too short for that falls back to the SFT rule)."""

    caption_table, curation_hint, needs_combinations = "shot_captions", "with --caption-shots ", False

    @staticmethod
    def usable_frames(shot_frames: int) -> int:
        end = int(PRETRAIN_KEEP[1] * shot_frames)
        return end - int(PRETRAIN_KEEP[0] * end)

    @staticmethod
    def window(shot_frames: int, config: DataConfig, rng: np.random.Generator, frames: int) -> tuple[int, int] | None:
        end = int(PRETRAIN_KEEP[1] * shot_frames)
        first, last = int(PRETRAIN_KEEP[0] * end), end - ((frames - 1) * config.max_stride + 1)
        if last >= first:
            return int(rng.integers(first, last + 1)), config.max_stride
        return SFTData.window(shot_frames, config, rng, frames)

    @staticmethod
    def samples(shots, captions, combos, config: DataConfig, report: ManifestReport, exists: dict) -> list[list[Scene]]:
        table = shots[shots["status"] == Status.OK].merge(captions[["shot_id", "caption", "status"]], on="shot_id",
                                                     how="left", suffixes=("", "_caption"))  # fmt: skip
        report.candidates = len(table)
        samples = []
        for row in table.to_dict("records"):
            status = row.get("status_caption")
            status = status if isinstance(status, str) else "missing"
            if not _caption_ok(status, config):
                report.dropped[f"caption {status}"] += 1
                continue
            scene = _scene(row, row.get("caption"), config, report, exists)
            if scene:
                samples.append([scene])
        return samples

    @staticmethod
    def sampler(samples: list[list[Scene]], config: DataConfig, seed: int):
        return PretrainSampler(samples, config.scenes, seed)


class SFTData:
    """Stage 2: curated combinations with their per-shot captions (annotations, status ok).
    Official windows: the largest stride <= max_stride at which the frames fit, start uniform."""

    caption_table, curation_hint, needs_combinations = "annotations", "", True

    @staticmethod
    def usable_frames(shot_frames: int) -> int:
        return shot_frames

    @staticmethod
    def window(shot_frames: int, config: DataConfig, rng: np.random.Generator, frames: int) -> tuple[int, int] | None:
        return max_stride_window(shot_frames, frames, config.max_stride, rng)

    @staticmethod
    def samples(shots, captions, combos, config: DataConfig, report: ManifestReport, exists: dict) -> list[list[Scene]]:
        by_shot = {row["shot_id"]: row for row in shots.to_dict("records")}
        notes = {row["combination_id"]: row for row in captions.to_dict("records")}
        ok = combos[combos["status"] == Status.OK]
        report.candidates = len(ok)
        samples = []
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
        return samples

    @staticmethod
    def sampler(samples: list[list[Scene]], config: DataConfig, seed: int):
        return SFTSampler(samples, seed)


STAGES = {"pretrain": PretrainData, "sft": SFTData}


def stage_of(config: DataConfig):
    """What differs between the two training stages: their tables, windows and sampler."""
    return STAGES[config.stage]


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
        self.draw = stage_of(config).sampler(samples, config, seed)
        self._sources: dict[str, str | None] = {}  # source path -> why it is not its row's video (None: it is)

    def check_source(self, shot) -> None:
        """The file a row names must be the video the row was made from: its content fingerprint is the
        row's video_id (checked once per file and process: 3 MiB read). Another file at that path (a
        replaced video, an edited manifest) is a VideoReadError: skipped, counted and reported."""
        path, video_id = str(shot["source_path"]), str(shot["video_id"])
        if path not in self._sources:
            from manifests.probe import fingerprint

            try:
                found = fingerprint(path)
            except Exception as err:  # noqa: BLE001 - a missing file, or an object store's client error
                found = f"unreadable ({type(err).__name__}: {err})"
            self._sources[path] = None if video_id.startswith("path-") or found == video_id else (
                f"{path} is not the video its rows were made from (content fingerprint {found}, the manifest says "
                f"{video_id}): the file was replaced or the manifest edited; re-run curation on it")  # fmt: skip
        if self._sources[path]:
            raise VideoReadError(self._sources[path])

    def __len__(self) -> int:
        return 2**62  # keys come from LayoutBatchSampler

    def layout(self, draw: int) -> tuple[int, ...]:
        """Frames per scene of the sample drawn as `draw` (cheap: no decoding)."""
        return tuple(scene.frames or self.config.num_frames for scene in self.draw(draw))

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """Sample `key` = stream index, or (stream index, content draw) from LayoutBatchSampler. A
        sample whose source cannot be read (changed or truncated since curation) is replaced by a
        substitute drawn from (seed, index, attempt): the same on every run and resume. The item
        lists what it skipped, so the trainer counts and reports it."""
        index, first_draw = key if isinstance(key, tuple) else (key, key)
        skipped = []
        for attempt in range(SUBSTITUTES + 1):
            draw = first_draw + attempt * SUBSTITUTE_STRIDE
            scenes = draw_windows(self.draw(draw), self.config, self.seed, draw)
            item = {"index": index, "captions": [s.caption for s in scenes], "keys": [s.content_key for s in scenes],
                    "video_ids": [s.shot["video_id"] for s in scenes], "skipped": skipped}  # fmt: skip
            if not self.load_frames:
                return item
            try:
                for s in scenes:
                    self.check_source(s.shot)
                frames = [
                    resize_crop(read_shot_frames(s.shot, indices=s.frame_offsets(self.config.num_frames),
                                                 max_side=max(self.config.height, self.config.width) * 2,
                                                 crop=self.config.crop_bars),
                                self.config.height, self.config.width)
                    for s in scenes
                ]  # fmt: skip
            except VideoReadError as err:
                skipped.append(str(err))
                continue
            item["frames"] = [torch.from_numpy(f) for f in frames]  # per scene (T_s, H, W, 3) uint8
            return item
        raise DataError(
            f"sample {index} and {SUBSTITUTES} substitutes could not be read; the sources changed since curation, "
            f"re-run curation on them. Last errors: {'; '.join(skipped[-3:])}"
        )


LAYOUT_CANDIDATES = 16  # draws a batch looks through for samples of its first sample's layout
LAYOUT_STRIDE = 10**15  # candidate c of stream index i is drawn as i + c * stride (substitutes use 10**12)


class LayoutBatchSampler(torch.utils.data.Sampler):
    """Batches of (stream index, content draw) whose samples share one layout (frames per scene).

    Batch j of rank r holds stream indices start + r + (j*B + k) * world, k < B, exactly as plain
    streaming would. Sample k > 0 takes the first of its candidate draws (i, i + stride, ...) whose
    layout equals sample 0's, so every batch stacks; a batch that finds none within
    LAYOUT_CANDIDATES is smaller rather than mixed. Sample 0 comes from the plain stream, so every
    layout, rare ones too, is trained as often as the data holds it. Everything is a function of the
    stream position: a resumed run builds the same batches.
    """

    def __init__(self, dataset: SceneDataset, start: int, rank: int, world: int, batch_size: int):
        self.dataset, self.start, self.rank, self.world, self.batch_size = dataset, start, rank, world, batch_size

    def __iter__(self):
        uniform = self.dataset.config.scene_frames == "equal" or self.batch_size == 1
        batch_index = 0
        while True:
            indices = [self.start + self.rank + (batch_index * self.batch_size + k) * self.world
                       for k in range(self.batch_size)]  # fmt: skip
            if uniform:
                yield [(i, i) for i in indices]
            else:
                layout = self.dataset.layout(indices[0])
                batch = [(indices[0], indices[0])]
                for index in indices[1:]:
                    draws = (index + c * LAYOUT_STRIDE for c in range(LAYOUT_CANDIDATES))
                    match = next((d for d in draws if self.dataset.layout(d) == layout), None)
                    if match is not None:
                        batch.append((index, match))
                yield batch
            batch_index += 1

    def __len__(self) -> int:
        return 2**62


def collate(items: list[dict]) -> dict:
    batch = {key: [item[key] for item in items] for key in ("index", "captions", "keys", "video_ids", "skipped")}
    if "frames" in items[0]:  # per scene (B, T_s, H, W, 3): a batch shares one layout
        batch["frames"] = [torch.stack(scene) for scene in zip(*(item["frames"] for item in items))]
    return batch
