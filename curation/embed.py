"""Shot embeddings: ViCLIP (the paper's), frame-averaged CLIP, or a weight-free colour-layout default.

Each embedder samples a fixed number of frames uniformly across a shot, decoded once per shot
(frame-exact, from the source video) and turned into one L2-normalised vector. Embedding runs in
Ray actors that load the model once (on a GPU when the cluster has one) and work video by video,
so the results of each video are committed as one part file and a re-run skips finished videos.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from curation.progress import StageProgress
from manifests.frames import read_shot_frames
from manifests.io import read_table, write_part
from manifests.schema import SHOT_EMBEDDINGS
from model.viclip import sample_indices

log = logging.getLogger("curation")

FIDELITY = {
    "viclip": "ViCLIP video-text embeddings (InternVid): the relevance signal Mask²DiT used",
    "clip": "frame-averaged CLIP image embeddings: semantic, but blind to motion",
    "color": (
        "weight-free colour-layout descriptor (HSV histogram + 4x4 Lab layout, frame-averaged): finds shots "
        "of the same place and lighting, not the same characters; use --embedder viclip for real curation"
    ),
}


@dataclass(frozen=True)
class EmbedderConfig:
    kind: str = "color"  # viclip | clip | color
    checkpoint: str | None = None  # ViCLIP .pth/.safetensors, or a local CLIP folder
    frames_per_shot: int = 8
    batch_size: int = 16
    decode_max_side: int = 320  # frames are decoded small: every embedder resizes to <= 224


class ColorLayoutEmbedder:
    """A deterministic, weight-free shot descriptor for machines without model weights."""

    name, checkpoint_hash = "color-layout", None

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        import cv2

        vectors = []
        for frames in shots:
            per_frame = []
            for frame in frames:
                hsv = cv2.cvtColor(frame, cv2.COLOR_RGB2HSV)
                hist = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256]).ravel()
                hist = np.sqrt(hist / max(hist.sum(), 1.0))  # Hellinger: cosine behaves like Bhattacharyya
                lab = cv2.cvtColor(cv2.resize(frame, (4, 4), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2LAB)
                layout = (lab.astype(np.float32).ravel() - 128.0) / 128.0
                per_frame.append(np.concatenate([hist, 0.5 * layout]))
            vectors.append(np.mean(per_frame, axis=0))
        matrix = np.asarray(vectors, dtype=np.float32)
        matrix -= matrix.mean(axis=1, keepdims=True)  # centred, so unrelated shots are not all similar
        return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-8)


class ViCLIPEmbedder:
    def __init__(self, checkpoint: str, device: str):
        from model.viclip import ViCLIP

        self.model = ViCLIP.from_checkpoint(checkpoint).to(device)
        if device == "cuda":
            self.model = self.model.to(torch.bfloat16)
        size = "l14" if self.model.config.vision_width == 1024 else f"w{self.model.config.vision_width}"
        self.name, self.checkpoint_hash = f"viclip-{size}", self.model.checkpoint_hash
        self.frames_per_shot = self.model.config.num_frames
        self.decode_max_side = None  # the official demo resizes full-size frames straight to 224x224

    def frame_indices(self, num_frames: int) -> list[int]:
        from model.viclip import viclip_frame_indices

        return viclip_frame_indices(num_frames, self.frames_per_shot)

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        from model.viclip import preprocess_frames

        size = self.model.config.image_size
        video = torch.stack([preprocess_frames(frames, size) for frames in shots])
        return self.model.video_embeddings(video).numpy()


class ClipEmbedder:
    def __init__(self, checkpoint: str, device: str):
        from model.clip import ClipEncoder

        self.encoder = ClipEncoder.from_pretrained(checkpoint, device=device)
        self.name, self.checkpoint_hash = "clip", self.encoder.checkpoint_hash

    def embed(self, shots: list[np.ndarray]) -> np.ndarray:
        counts = [len(f) for f in shots]
        per_frame = self.encoder.image_embeddings(np.concatenate(shots)).numpy()
        means = np.stack([chunk.mean(0) for chunk in np.split(per_frame, np.cumsum(counts)[:-1])])
        return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-8)


def make_embedder(config: EmbedderConfig, device: str = "cpu"):
    if config.kind == "color":
        return ColorLayoutEmbedder()
    if not config.checkpoint:
        raise ValueError(f"--embedder {config.kind} needs a local checkpoint (--{config.kind}-checkpoint PATH)")
    return (ViCLIPEmbedder if config.kind == "viclip" else ClipEmbedder)(config.checkpoint, device)


class EmbedWorker:
    """One per Ray actor: loads the embedder once, then embeds whole videos' shots in batches."""

    def __init__(self, config: EmbedderConfig):
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config = config
        self.embedder = make_embedder(config, device)
        self.frames_per_shot = getattr(self.embedder, "frames_per_shot", config.frames_per_shot)
        self.decode_max_side = getattr(self.embedder, "decode_max_side", config.decode_max_side)
        self.frame_indices = getattr(
            self.embedder, "frame_indices", lambda num_frames: sample_indices(num_frames, self.frames_per_shot)
        )

    def identity(self) -> tuple[str, str | None]:
        return self.embedder.name, self.embedder.checkpoint_hash

    def embed_video(self, shots: list[dict]) -> dict:
        """Embed one video's shots. Returns rows plus per-shot errors (a shot that fails is skipped)."""
        began = time.perf_counter()
        rows, errors, batch, batch_rows = [], [], [], []

        def flush():
            if batch:
                vectors = self.embedder.embed(batch)
                for row, vector in zip(batch_rows, vectors):
                    rows.append(row | {"embedding": vector.astype(np.float16)})
                batch.clear(), batch_rows.clear()

        for shot in shots:
            offsets = self.frame_indices(int(shot["num_frames"]))
            try:
                frames = read_shot_frames(shot, indices=offsets, max_side=self.decode_max_side)
            except Exception as err:  # a shot whose frames cannot be read is reported, the rest go on
                errors.append(f"{shot['shot_id']}: {err}")
                continue
            batch.append(frames)
            batch_rows.append({
                "shot_id": shot["shot_id"], "video_id": shot["video_id"], "clip_index": shot.get("clip_index"),
                "embedder": self.embedder.name, "checkpoint_hash": self.embedder.checkpoint_hash,
                "frames": [int(shot["start_frame"]) + o for o in offsets],
            })  # fmt: skip
            if len(batch) == self.config.batch_size:
                flush()
        flush()
        return {"rows": rows, "errors": errors, "seconds": time.perf_counter() - began}


def embeddings_table(rows: list[dict]) -> pa.Table:
    """Rows -> a shot_embeddings table whose `embedding` column is a fixed-size float16 list."""
    dim = len(rows[0]["embedding"]) if rows else 1
    columns = {
        f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in SHOT_EMBEDDINGS if f.name != "embedding"
    }
    flat = np.concatenate([r["embedding"] for r in rows]).astype(np.float16) if rows else np.zeros(0, np.float16)
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), dim)
    fields = [
        f if f.name != "embedding" else pa.field("embedding", pa.list_(pa.float16(), dim), nullable=False)
        for f in SHOT_EMBEDDINGS
    ]
    return pa.Table.from_pydict(columns, schema=pa.schema(fields, metadata=SHOT_EMBEDDINGS.metadata))


@dataclass
class EmbedSummary:
    embedder: str = ""
    checkpoint_hash: str | None = None
    fidelity: str = ""
    videos_embedded: int = 0
    videos_skipped: int = 0
    shots_embedded: int = 0
    shot_errors: int = 0
    seconds: float = 0.0
    shots_per_second: float = 0.0


def expected_identity(config: EmbedderConfig) -> tuple[str | None, str | None]:
    """(embedder name or None, checkpoint hash) of the embedder `config` builds, without building it."""
    from pathlib import Path

    from model.viclip import file_hash

    if config.kind == "color":
        return ColorLayoutEmbedder.name, None
    path = Path(config.checkpoint)
    if path.is_dir():
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        return None, file_hash(weights[0]) if weights else None
    return None, file_hash(path)


def run_embedding(output, config: EmbedderConfig, num_actors: int | None = None) -> EmbedSummary:
    """Embed the ok shots of every ok video that has no embeddings from this embedder yet."""
    import ray

    began = time.perf_counter()
    videos = read_table(output, "videos", missing_ok=True)
    shots = read_table(output, "shots", missing_ok=True)
    existing = read_table(output, "shot_embeddings", missing_ok=True)
    ok_videos = list(videos.loc[videos["status"] == "ok", "video_id"])
    # Who would embed, known without loading anything: a weights file's hash, or the weight-free name.
    name, checkpoint_hash = expected_identity(config)
    same = existing["checkpoint_hash"].fillna("") == (checkpoint_hash or "")
    if name is not None:
        same &= existing["embedder"] == name
    done = set(existing.loc[same, "video_id"])
    todo = [v for v in ok_videos if v not in done]
    if not todo:  # nothing to embed: no actors, no model load
        known = existing.loc[same, "embedder"]
        return EmbedSummary(embedder=name or (known.iloc[0] if len(known) else config.kind),
                            checkpoint_hash=checkpoint_hash, fidelity=FIDELITY[config.kind],
                            videos_skipped=len(ok_videos), seconds=time.perf_counter() - began)  # fmt: skip
    gpus = int(ray.cluster_resources().get("GPU", 0))
    worker_cls = ray.remote(num_gpus=1 if gpus else 0, num_cpus=1)(EmbedWorker)
    count = num_actors or max(1, min(len(todo), gpus or min(2, int(ray.cluster_resources().get("CPU", 1)))))
    workers = [worker_cls.remote(config) for _ in range(count)]
    name, checkpoint_hash = ray.get(workers[0].identity.remote())
    summary = EmbedSummary(embedder=name, checkpoint_hash=checkpoint_hash, fidelity=FIDELITY[config.kind])
    summary.videos_skipped = len(ok_videos) - len(todo)
    ok_shots = shots[shots["status"] == "ok"]
    pending = {}
    for i, video_id in enumerate(todo):
        rows = ok_shots[ok_shots["video_id"] == video_id].to_dict("records")
        pending[workers[i % count].embed_video.remote(rows)] = video_id
    progress = StageProgress("embed", len(pending), "videos")
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        video_id = pending.pop(ready[0])
        result = ray.get(ready[0])
        write_part(output, "shot_embeddings", video_id, embeddings_table(result["rows"]))
        progress.step()
        summary.videos_embedded += 1
        summary.shots_embedded += len(result["rows"])
        summary.shot_errors += len(result["errors"])
        for error in result["errors"]:
            log.warning("embedding: %s", error)
    summary.seconds = time.perf_counter() - began
    summary.shots_per_second = summary.shots_embedded / summary.seconds if summary.seconds else 0.0
    return summary
