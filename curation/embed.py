"""Shot embeddings: ViCLIP (the paper's), frame-averaged CLIP, or a weight-free colour-layout default.

Each embedder samples a fixed number of frames per shot (its `FrameSpec`) and turns them into one
L2-normalised vector. The frames come from the shot detection pass, which keeps them while it
decodes (curation/shot_frames.py), so this stage only runs the model; shots of earlier runs (or
a new embedder) are read from the source instead, by `read_frames`, which gives the same pixels.
Embedding runs in Ray actors that load the model once (on a GPU when the cluster has one) and
work video by video: each video's results are one part file, a shot that fails is a failed row,
and a re-run embeds only what is missing or failed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from curation.config import CurationConfig, EmbedConfig
from curation.driver import Driver
from curation.embedders import FIDELITY, expected_identity, frame_spec_for, make_embedder, rows_of_this_embedder
from curation.progress import StageProgress
from curation.shot_frames import FrameSpec, ShotFrames, frames_for_shot
from curation.stage import Failure, Remote, Resources, Stage
from curation.tasks import VideoTask
from manifests.frames import read_shot_frames
from manifests.io import read_part, read_table, write_part
from manifests.schema import SHOT_EMBEDDINGS, ShotEmbeddingRecord, Status

log = logging.getLogger("curation")


class VideoEmbedder:
    """Loads the embedder once, then embeds whole videos' shots in batches."""

    def __init__(self, config: EmbedConfig):
        device = "cpu"
        if config.kind != "color":  # the weight-free embedder never needs torch (a second of start-up)
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.config = config
        self.embedder = make_embedder(config, device)
        self.spec = getattr(self.embedder, "frame_spec", None) or frame_spec_for(config)

    def identity(self) -> tuple[str, str | None]:
        return self.embedder.name, self.embedder.checkpoint_hash

    def embed_video(self, shots: list[dict], frames: list | None = None) -> dict:
        """Embed one video's shots: from `frames` (ShotFrames kept by the detection pass, None where
        none were kept) or, without them, read from the source. A shot that fails becomes a failed row."""
        began = time.perf_counter()
        rows, batch, batch_rows = [], [], []

        def flush():
            if batch:
                vectors = self.embedder.embed(batch)
                for row, vector in zip(batch_rows, vectors):
                    row.embedding, row.status = vector.astype(np.float16), Status.OK
                    rows.append(row)
                batch.clear(), batch_rows.clear()

        for shot, kept in zip(shots, frames or [None] * len(shots)):
            row = ShotEmbeddingRecord(shot_id=shot["shot_id"], video_id=shot["video_id"], clip_index=shot.get("clip_index"),
                                      embedder=self.embedder.name, checkpoint_hash=self.embedder.checkpoint_hash)  # fmt: skip
            try:
                if kept is None:
                    kept = read_frames(shot, self.spec, self.config.frames_from)
                images, used = kept.images, kept.frames
            except Exception as err:  # a shot whose frames cannot be read is a failed row, the rest go on
                row.status, row.error, row.error_stage = Status.FAILED, f"{shot['shot_id']}: {err}", "embed"
                rows.append(row)
                continue
            batch.append(images)
            row.frames = [int(f) for f in used]
            batch_rows.append(row)
            if len(batch) == self.config.batch:
                flush()
        flush()
        return {"rows": rows, "seconds": time.perf_counter() - began}


def read_frames(shot: dict, spec: FrameSpec, frames_from: str = "detection") -> ShotFrames:
    """The re-decoding path: a shot's frames for `spec`, read from its source video. With
    frames_from="detection" they are the frames the detection pass would have kept (`FrameSpec.pass_frames`),
    so a resumed run embeds what an uninterrupted one does; "source" takes the exact offsets."""
    start, end = int(shot["start_frame"]), int(shot["end_frame"])
    if frames_from == "detection":
        offsets = [f - start for f in spec.pass_frames(start, end)]
    else:
        offsets = spec.offsets(int(shot["num_frames"]))
    images = spec.finish(read_shot_frames(shot, indices=offsets, max_side=spec.read_size()))
    return ShotFrames([start + o for o in offsets], images)


@dataclass(frozen=True)
class EmbedItem:
    video_id: str
    shots: list[dict]
    spec: FrameSpec
    frames: list | None = None  # ShotFrames per shot from the detection pass (None: read again)


class EmbedRemote(Remote):
    """Shot embeddings in Ray actors that load the model once (a GPU each when the cluster has them)."""

    name, actors = "embed", True

    def __init__(self, config: EmbedConfig, resources: Resources):
        self.config, self.resources = config, resources
        self.frame_spec = frame_spec_for(config)
        self.embedder: VideoEmbedder | None = None

    def setup(self) -> None:
        self.embedder = VideoEmbedder(self.config)

    def process(self, item: EmbedItem) -> dict:
        frames = item.frames if item.spec == self.embedder.spec else None  # the model wants other frames
        return self.embedder.embed_video(item.shots, frames)


def embed_resources(config: EmbedConfig) -> Resources:
    """A GPU per actor when the cluster has GPUs, and never a CPU slot: actors live for the whole run,
    and one that held a CPU would take it from the detection tasks for good (with as many actors as
    CPUs, detection could never be scheduled again). On CPU-only clusters they share the cores."""
    import ray

    if int(ray.cluster_resources().get("GPU", 0)):
        return Resources(cpus=0, gpus=1)
    return Resources(cpus=0)


def embeddings_table(rows: list[dict]) -> pa.Table:
    """Rows -> a shot_embeddings table whose `embedding` column is a fixed-size float16 list
    (null for a failed shot)."""
    vectors = [r["embedding"] for r in rows if r.get("embedding") is not None]
    dim = len(vectors[0]) if vectors else 1
    columns = {
        f.name: pa.array([r.get(f.name) for r in rows], type=f.type) for f in SHOT_EMBEDDINGS if f.name != "embedding"
    }
    flat = np.concatenate(
        [r["embedding"] if r.get("embedding") is not None else np.zeros(dim, np.float16) for r in rows]
    ).astype(np.float16) if rows else np.zeros(0, np.float16)  # fmt: skip
    mask = pa.array([r.get("embedding") is None for r in rows], type=pa.bool_())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float16()), dim, mask=mask)
    fields = [
        f if f.name != "embedding" else pa.field("embedding", pa.list_(pa.float16(), dim)) for f in SHOT_EMBEDDINGS
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
    seconds: float = 0.0  # wall time from the first embedding item to the last
    task_seconds: float = 0.0  # time inside the actors
    shots_per_second: float = 0.0


def embedding_todo(output, config: EmbedConfig, shots=None) -> tuple[list[EmbedItem], int]:
    """Items for ok videos without embeddings from this embedder, or with failed shots (only those
    are embedded again), read from the source; and how many ok videos need nothing. `shots`: the
    shots table when the caller has it."""
    videos = read_table(output, "videos", missing_ok=True)
    shots = read_table(output, "shots", missing_ok=True) if shots is None else shots
    existing = read_table(output, "shot_embeddings", missing_ok=True)
    ok_videos = list(videos.loc[videos["status"] == Status.OK, "video_id"])
    mine = rows_of_this_embedder(existing, config)
    embedded = set(mine.loc[mine["status"].fillna(Status.OK) == Status.OK, "shot_id"])
    spec, items, skipped = frame_spec_for(config), [], 0
    pending = shots[(shots["status"] == Status.OK) & ~shots["shot_id"].isin(embedded)]
    by_video = {
        video_id: rows for video_id, rows in pending.groupby("video_id", sort=False)
    }  # one pass, not one per video
    for video_id in ok_videos:
        rows = by_video[video_id].to_dict("records") if video_id in by_video else []
        if rows:
            items.append(EmbedItem(video_id, rows, spec))
        else:
            skipped += 1
    return items, skipped


def commit_embeddings(output, video_id: str, results: list[tuple[EmbedItem, object]], summary: EmbedSummary,
                      merge: bool = True) -> None:  # fmt: skip
    """Write one video's embeddings from its items' results (a `Failure` makes its shots failed rows);
    `merge`: with the rows of its shots that were not redone (earlier runs, the same embedder). A video
    this run detected is written whole (merge=False): its part holds exactly its ok shots."""
    rows: list[ShotEmbeddingRecord] = []
    for item, result in results:
        if isinstance(result, Failure):  # the actor died or raised: every shot of the item is a failed row
            rows += [ShotEmbeddingRecord(shot_id=s["shot_id"], video_id=s["video_id"], clip_index=s.get("clip_index"),
                                         embedder=summary.embedder, checkpoint_hash=summary.checkpoint_hash,
                                         status=Status.FAILED, error=result.error, error_stage=result.stage)
                     for s in item.shots]  # fmt: skip
            continue
        rows += result["rows"]
        summary.task_seconds += result["seconds"]
        if result["rows"] and summary.embedder != result["rows"][0]["embedder"]:
            summary.embedder, summary.checkpoint_hash = (
                result["rows"][0]["embedder"],
                result["rows"][0]["checkpoint_hash"],
            )
    keep = []
    if merge:
        redone = {r["shot_id"] for r in rows}
        earlier = read_part(output, "shot_embeddings", video_id)
        keep = [
            r for r in earlier.to_dict("records") if r["shot_id"] not in redone and r["embedder"] == summary.embedder
        ]
        for row in keep:
            row["embedding"] = None if row["embedding"] is None else np.asarray(row["embedding"], np.float16)
    write_part(output, "shot_embeddings", video_id, embeddings_table(keep + rows))
    failed = [r for r in rows if r["status"] == Status.FAILED]
    summary.videos_embedded += 1
    summary.shots_embedded += len(rows) - len(failed)
    summary.shot_errors += len(failed)
    if failed:
        log.warning("embedding: %d shots of video %s failed: %s", len(failed), video_id, failed[0]["error"])


class Embed(Stage):
    """Shot embeddings of each committed video's ok shots, from the frames the detection pass kept;
    then, in `finish`, the shots earlier runs left without embeddings (another embedder, failed
    shots), read from the source.

    A video is embedded once its shots are final (after reconcile), so every filter has judged them
    with the whole video in view and each result is written as it comes back: nothing is embedded
    early, trimmed, or read back (embedding a finished clip's shots while other clips decode did not
    pay: docs/benchmarks.md)."""

    name = "embed"
    about = "shot embeddings from the kept frames (Ray actors, model loaded once, GPU when present)"

    def __init__(self, remote: EmbedRemote, config: CurationConfig, actor_count: int):
        self.remote, self.actor_count, self.config = remote, actor_count, config
        self.embedded: set[str] = set()  # videos embedded (or failed) from this run's detection pass
        name, checkpoint_hash = expected_identity(config.embed)
        self.report = EmbedSummary(embedder=name or config.embed.kind, checkpoint_hash=checkpoint_hash,
                                   fidelity=FIDELITY[config.embed.kind])  # fmt: skip

    def enter(self, task: VideoTask, driver: Driver) -> None:
        """A video is committed: embed its ok shots from the frames its detection pass kept."""
        video_id, spec = task.video_id, self.remote.frame_spec
        clip_frames = [r.frames for r in (task.detected[i] for i in range(len(task.clips))) if r.frames]
        ok = [s for s in task.shots if s["status"] == Status.OK]
        if ok:
            item = EmbedItem(video_id, ok, spec,
                             [frames_for_shot(s["start_frame"], s["end_frame"], clip_frames, "embed", spec) for s in ok])  # fmt: skip
            driver.work(self, item, lambda result: commit_embeddings(self.config.output, video_id, [(item, result)],
                                                                     self.report, merge=False))  # fmt: skip
        self.embedded.add(video_id)
        driver.forward(self, task)

    def finish(self, driver: Driver) -> None:
        """Catch up: ok videos of earlier runs whose shots this embedder has not embedded."""
        began = time.perf_counter()
        report = self.report
        catch_up, nothing_to_do = embedding_todo(self.config.output, self.config.embed, driver.table("shots"))
        catch_up = [item for item in catch_up if item.video_id not in self.embedded]  # failures now: next run
        report.videos_skipped = max(0, nothing_to_do - report.videos_embedded)  # done by earlier runs
        if catch_up:
            progress = StageProgress("embed", len(catch_up), "videos")
            for item in catch_up:

                def done(result, item=item) -> None:
                    commit_embeddings(self.config.output, item.video_id, [(item, result)], report)
                    progress.step()

                driver.work(self, item, done)
            driver.drain()
        report.seconds = report.task_seconds + (time.perf_counter() - began if catch_up else 0.0)
        report.shots_per_second = report.shots_embedded / report.task_seconds if report.task_seconds else 0.0


def embed_actors(config: EmbedConfig) -> int:
    """One actor per GPU; on CPU one for the light colour embedder, else up to two."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus
    return 1 if config.kind == "color" else min(2, max(1, int(ray.cluster_resources().get("CPU", 1))))
