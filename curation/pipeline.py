"""Videos stream through the Ray stages: probe → split → detect → reconcile → embed.

Each video moves on as soon as it can: its clips are detected as soon as it is probed, it is
reconciled and committed as soon as all its clips are back, and its shots are embedded from the
frames the detection pass kept, while other videos are still being probed. Every stage runs on
the one `Executor` (curation/stage.py); the driver plans clips, reconciles and writes tables.
A failure anywhere (an exception, a crashed worker or actor) becomes a failed row for the items
it touched, and a re-run retries exactly those.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from curation.config import CurationConfig
from curation.detect import ClipResult, DetectItem, DetectStage
from curation.embed import (
    FIDELITY,
    EmbedItem,
    EmbedStage,
    EmbedSummary,
    commit_embeddings,
    embed_resources,
    embedding_todo,
    expected_identity,
)
from curation.probe import ProbeStage, Skipped
from curation.progress import Progress, StageProgress
from curation.reconcile import CommitBatch, commit_failure, commit_video, evidence
from curation.shot_filters import filter_reason
from curation.shot_frames import frames_for_shot
from curation.split import ClipWindow, plan_clips
from curation.stage import Executor, Failure
from manifests.io import OUTPUT_FULL, read_table, table_video_ids, tidy_batches
from manifests.probe import VideoProbe
from manifests.schema import STATUS_OK, shot_id

log = logging.getLogger("curation")


@dataclass
class VideoJob:
    probe: VideoProbe
    windows: list[ClipWindow]
    started: float
    results: dict[int, ClipResult] = field(default_factory=dict)


@dataclass
class VideoEmbedding:
    """One video's embedding items in this run: shots of a finished clip go as soon as the clip is
    back, the rest once the video is reconciled; the video's part is written when all are done."""

    results: list = field(default_factory=list)  # (EmbedItem, result or Failure)
    pending: int = 0
    early: set = field(default_factory=set)  # shot ids sent before the video was reconciled
    ok_ids: set | None = None  # the reconciled ok shots; None until then
    dropped: bool = False  # the video failed: nothing is written


@dataclass
class RunSummary:
    videos_total: int = 0
    videos_ok: int = 0
    videos_failed: int = 0
    videos_skipped: int = 0
    duplicates: int = 0
    clips: int = 0
    shots: int = 0
    hours_processed: float = 0.0
    frames_decoded: int = 0
    detect_task_seconds: float = 0.0
    wall_seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)  # probe, detect: summed task time
    failures: list[dict] = field(default_factory=list)


def completed_video_ids(config: CurationConfig) -> frozenset[str]:
    """Videos a resumed run skips: those committed ok whose shot and clip parts are all still there
    (a deleted table or part makes its videos redo), and failed ones too with retry_failed off."""
    videos = read_table(config.output, "videos", missing_ok=True, columns=["video_id", "status"])
    if config.retry_failed:
        videos = videos[videos["status"] == STATUS_OK]

    with_rows = {table: table_video_ids(config.output, table) for table in ("shots", "clips")}

    def intact(video_id: str, status: str) -> bool:  # an ok video has at least one shot and one clip
        return status != STATUS_OK or all(video_id in ids for ids in with_rows.values())

    return frozenset(v for v, status in zip(videos["video_id"], videos["status"]) if intact(v, status))


def split(probe: VideoProbe, config: CurationConfig) -> list[ClipWindow]:
    """The split stage: clip windows of --clip-minutes with overlap (one window without timestamps)."""
    overlap = max(round(config.shots.overlap_seconds * probe.fps), config.shots.detector.context_frames)
    if probe.pts_reliable:
        return plan_clips(probe.num_frames, probe.fps, config.shots.clip_minutes, overlap)
    return [ClipWindow(0, 0, probe.num_frames, 0, probe.num_frames)]


class VideoFlow:
    """The driver's side of the streaming stages: it submits, commits and records failures."""

    def __init__(self, config: CurationConfig, executor: Executor, embed: EmbedStage | None):
        import ray

        self.ray = ray
        self.config, self.executor, self.embed = config, executor, embed
        self.cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.summary = RunSummary()
        self.jobs: dict[str, VideoJob] = {}
        self.pts_refs: dict[str, object] = {}
        self.seen: set[str] = set()
        self.embed_report = None  # curation.embed.EmbedSummary, filled as videos are embedded
        self.embedded: set[str] = set()  # videos embedded (or failed) from this run's detection pass
        self.embeddings: dict[str, VideoEmbedding] = {}
        self.batch = CommitBatch(config.output, config.commit_videos, config.commit_seconds)

    # -- probe ---------------------------------------------------------------------------------
    def on_probe(self, path: str):
        def done(result) -> None:
            if isinstance(result, Failure):
                self.fail(path, result.error, result.stage)
            elif isinstance(result, Skipped) or result.video_id in self.seen:
                if isinstance(result, Skipped):
                    self.summary.videos_skipped += 1
                else:
                    self.summary.duplicates += 1
                    log.info("%s has the same content as an earlier input; processed once", path)
                self.progress.video_done(skipped=True)
            else:
                self.seen.add(result.video_id)
                self.start_detection(result)

        return done

    # -- split + detect ------------------------------------------------------------------------
    def start_detection(self, probe: VideoProbe) -> None:
        if self.embed is not None:
            self.executor.warm("embed")  # its set-up overlaps detection, not the end of the run
        windows = split(probe, self.config)
        self.jobs[probe.video_id] = VideoJob(probe, windows, time.perf_counter())
        self.pts_refs[probe.video_id] = self.ray.put(probe.pts)
        threads = self.config.shots.decode_threads or max(1, min(4, self.cpus // len(windows)))
        for window in windows:
            item = DetectItem(probe.source_path, window, self.pts_refs[probe.video_id], probe.fps, probe.rotation,
                              probe.pts_reliable, threads)  # fmt: skip
            self.executor.submit("detect", item, self.on_clip(probe.video_id, window))

    def on_clip(self, video_id: str, window: ClipWindow):
        def done(result) -> None:
            if isinstance(result, Failure):
                result = ClipResult(window, error=f"{self.jobs[video_id].probe.source_path}: {result.error}")
            job = self.jobs[video_id]
            job.results[window.clip_index] = result
            self.summary.frames_decoded += result.frames_decoded
            self.summary.detect_task_seconds += result.seconds
            if self.embed is not None and result.frames is not None and not result.error:
                self.embed_finished_shots(job, window, result)
            if len(job.results) == len(job.windows):
                del self.jobs[video_id], self.pts_refs[video_id]
                self.reconcile(job)

        return done

    # -- reconcile -----------------------------------------------------------------------------
    def reconcile(self, job: VideoJob) -> None:
        results = [job.results[i] for i in range(len(job.windows))]
        path = job.probe.source_path
        embedding = self.embeddings.setdefault(job.probe.video_id, VideoEmbedding())
        try:
            row, shots = commit_video(job.probe, job.windows, results, self.config, time.perf_counter() - job.started,
                                      self.batch)  # fmt: skip
        except OSError as err:
            if err.errno in OUTPUT_FULL:  # the output cannot take a failure row either: stop cleanly
                raise
            row, error = None, f"{path}: could not write results: {err}"
        except Exception as err:  # e.g. a keyframe read failing on a file that changed mid-run
            row, error = None, f"{path}: could not write results: {err}"
        if row is None or row["status"] != STATUS_OK:
            embedding.dropped = True  # a failed video's early embeddings are not written
            self.commit_when_done(job.probe.video_id, embedding)
        if row is None:
            return self.fail(path, error, "reconcile")
        self.summary.clips += len(job.windows)
        if row["status"] != STATUS_OK:
            self.summary.videos_failed += 1
            self.summary.failures.append({"path": path, "stage": row["error_stage"], "error": row["error"]})
            self.progress.video_done(failed=True)
            return
        self.summary.videos_ok += 1
        self.summary.shots += row["num_shots"]
        self.summary.hours_processed += job.probe.duration_s / 3600
        self.progress.video_done(video_seconds=job.probe.duration_s, shots=row["num_shots"])
        if self.embed is not None:
            self.submit_embedding(job.probe.video_id, shots, [r.frames for r in results if r.frames])

    # -- embed ---------------------------------------------------------------------------------
    def embed_finished_shots(self, job: VideoJob, window: ClipWindow, result: ClipResult) -> None:
        """A clip is back: embed its shots that are certainly final, while other clips still decode."""
        probe, spec = job.probe, self.embed.frame_spec
        shots, frames = [], []
        transitions = set(result.transitions)
        for start, kept in sorted(result.frames.shots.items()):
            end = result.frames.ends[start]
            if "embed" not in kept or filter_reason(evidence(probe, start, end, transitions, result.luma), self.config):
                continue  # a filtered shot is never embedded (the same rules as the shot's row)
            shots.append({"shot_id": shot_id(probe.video_id, start), "video_id": probe.video_id,
                          "clip_index": window.clip_index, "source_path": probe.source_path, "start_frame": start,
                          "end_frame": end, "num_frames": end - start})  # fmt: skip
            frames.append(kept["embed"])
        if shots:
            state = self.embeddings.setdefault(probe.video_id, VideoEmbedding())
            state.early |= {s["shot_id"] for s in shots}
            self.send(EmbedItem(probe.video_id, shots, spec, frames), state)
        result.frames.shots.clear()  # sent (or filtered): the driver keeps only the clip's edge segments

    def submit_embedding(self, video_id: str, shots: list[dict], clip_frames: list) -> None:
        """A video is committed: embed its ok shots not sent yet, from the frames its detection kept."""
        spec = self.embed.frame_spec
        state = self.embeddings.setdefault(video_id, VideoEmbedding())
        ok = [s for s in shots if s["status"] == STATUS_OK]
        state.ok_ids = {s["shot_id"] for s in ok}
        todo = [s for s in ok if s["shot_id"] not in state.early]
        if todo:
            frames = [frames_for_shot(s["start_frame"], s["end_frame"], clip_frames, "embed", spec) for s in todo]
            self.send(EmbedItem(video_id, todo, spec, frames), state)
        self.embedded.add(video_id)
        self.commit_when_done(video_id, state)

    def send(self, item: EmbedItem, state: VideoEmbedding) -> None:
        state.pending += 1

        def done(result) -> None:
            state.pending -= 1
            state.results.append((item, result))
            self.commit_when_done(item.video_id, state)

        self.executor.submit("embed", item, done)

    def commit_when_done(self, video_id: str, state: VideoEmbedding) -> None:
        if state.pending or (state.ok_ids is None and not state.dropped):
            return
        if state.dropped:
            self.embeddings.pop(video_id, None)
            return
        results = []
        for item, result in state.results:  # only the reconciled ok shots (a clip's view could differ)
            keep = [i for i, s in enumerate(item.shots) if s["shot_id"] in state.ok_ids]
            if len(keep) < len(item.shots):
                item = EmbedItem(item.video_id, [item.shots[i] for i in keep], item.spec)
                if not isinstance(result, Failure):
                    result = result | {"rows": [r for r in result["rows"] if r["shot_id"] in state.ok_ids]}
            results.append((item, result))
        del self.embeddings[video_id]
        if results:
            commit_embeddings(self.config.output, video_id, results, self.embed_report)

    def on_embedded(self, item: EmbedItem):
        """A catch-up item (shots of earlier runs): committed on its own."""

        def done(result) -> None:
            commit_embeddings(self.config.output, item.video_id, [(item, result)], self.embed_report)

        return done

    # -- failures ------------------------------------------------------------------------------
    def fail(self, path: str, error: str, stage: str) -> None:
        commit_failure(path, error, stage, self.config)
        self.summary.videos_failed += 1
        self.summary.failures.append({"path": path, "stage": stage, "error": error})
        log.warning("failed (%s): %s", stage, error)
        self.progress.video_done(failed=True)

    # -- the run -------------------------------------------------------------------------------
    def run(self, paths: list[str]) -> RunSummary:
        began = time.perf_counter()
        self.summary.videos_total = len(paths)
        self.progress = Progress(len(paths))
        for path in paths:
            self.executor.submit("probe", path, self.on_probe(path))
        # Detection workers start while the first videos are probed (each start costs a second or two).
        self.executor.prestart("detect", min(self.cpus - 1, 2 * len(paths)))
        tidy_batches(self.config.output)  # a killed run's uncommitted batch parts go
        try:
            self.executor.run()
        finally:  # finished videos are committed also when the run is interrupted
            self.batch.flush()
            tidy_batches(self.config.output)  # videos redone here leave no older rows behind
        self.progress.close()
        self.summary.wall_seconds = time.perf_counter() - began
        return self.summary


def make_executor(config: CurationConfig) -> Executor:
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    return Executor(config.max_in_flight or 2 * cpus)


def run_pipeline(
    paths: list[str], config: CurationConfig, stages: dict[str, type] | None = None
) -> tuple[RunSummary, EmbedSummary]:
    """Probe, split, detect, reconcile and embed every input (streamed per video); then embed what
    older runs left without embeddings (another embedder, failed shots), read from the source.
    `stages` swaps a stage's class by name (tests use it to crash workers on purpose)."""
    classes = {"probe": ProbeStage, "detect": DetectStage, "embed": EmbedStage} | (stages or {})
    executor = make_executor(config)
    embed_config = config.embed
    embed = classes["embed"](embed_config, embed_resources(embed_config))
    executor.add(classes["probe"](completed_video_ids(config), cpus=min(1.0, config.shots.cpus_per_task)))
    keep = {"embed": embed.frame_spec} if embed_config.frames_from == "detection" else None
    executor.add(classes["detect"](config.shots, keep, gpus=detect_gpus(config)))
    executor.add(embed, workers=embed_workers(embed_config))
    flow = VideoFlow(config, executor, embed)
    name, checkpoint_hash = expected_identity(embed_config)
    report = flow.embed_report = EmbedSummary(embedder=name or embed_config.kind, checkpoint_hash=checkpoint_hash,
                                              fidelity=FIDELITY[embed_config.kind])  # fmt: skip
    try:
        summary = flow.run(paths)
        began = time.perf_counter()
        catch_up, nothing_to_do = embedding_todo(config.output, embed_config)
        catch_up = [item for item in catch_up if item.video_id not in flow.embedded]  # failures now: next run
        report.videos_skipped = max(0, nothing_to_do - report.videos_embedded)  # done by earlier runs
        if catch_up:
            progress = StageProgress("embed", len(catch_up), "videos")
            for item in catch_up:
                executor.submit(
                    "embed", item, lambda result, item=item: (flow.on_embedded(item)(result), progress.step())
                )
            executor.run()
        report.seconds = report.task_seconds + (time.perf_counter() - began if catch_up else 0.0)
        report.shots_per_second = report.shots_embedded / report.task_seconds if report.task_seconds else 0.0
        summary.stage_seconds = dict(executor.task_seconds)
    finally:
        executor.shutdown()
    return summary, report


def detect_gpus(config: CurationConfig) -> float:
    """GPUs per clip task: TransNetV2 runs there when the cluster has GPUs (a quarter each by default)."""
    import ray

    if config.shots.gpus_per_task is not None:
        return config.shots.gpus_per_task
    return 0.25 if config.shots.detector.transnet and ray.cluster_resources().get("GPU", 0) else 0.0


def embed_workers(config) -> int:
    """One actor per GPU; on CPU one for the light colour embedder, else up to two."""
    import ray

    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        return gpus
    return 1 if config.kind == "color" else min(2, max(1, int(ray.cluster_resources().get("CPU", 1))))
