"""The curation job on Ray: probe → split into clips → detect shots → reconcile and write manifests.

Probing runs as one Ray task per video and shot detection as one task per clip, so a long
video's clips and many videos' clips all spread over the cluster. The driver only plans clips,
reconciles each video's cuts and writes tables; results stream back as they finish, and each
video is committed as soon as all its clips are done.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field

import ray

from curation.clips import ClipWindow, plan_clips
from curation.config import CurationConfig
from curation.finalize import commit_failure, commit_video
from curation.progress import Progress
from curation.shots import ClipResult, detect_clip
from manifests.io import OUTPUT_FULL, read_table, table_path
from manifests.probe import ProbeError, VideoProbe, fingerprint, probe
from manifests.schema import STATUS_OK

log = logging.getLogger("curation")


@dataclass
class Skipped:
    path: str
    video_id: str


@dataclass
class Failed:
    path: str
    error: str


def probe_video(path: str, done_ids: frozenset[str]) -> VideoProbe | Skipped | Failed:
    """Fingerprint first: a video already in the manifests (under any name) is not probed again."""
    if not os.path.isfile(path):
        return Failed(path, f"{path}: file not found; check the --input path")
    try:
        video_id = fingerprint(path)
    except OSError as err:
        return Failed(path, f"{path}: cannot read file ({err.strerror or err}); check the path and permissions")
    if video_id in done_ids:
        return Skipped(path, video_id)
    try:
        return probe(path, video_id)
    except ProbeError as err:
        return Failed(path, str(err))
    except Exception as err:  # an unexpected decoder or container bug must not stop the run
        return Failed(path, f"{path}: unexpected error while probing: {type(err).__name__}: {err}")


def detect_video_clip(path, window, pts, fps, rotation, config: CurationConfig, seekable: bool) -> ClipResult:
    return detect_clip(
        path,
        window,
        pts,
        fps,
        rotation,
        config.detector,
        thumbnail_every=max(1, round(config.keyframe_interval_seconds * fps)),
        thumbnail_max_side=config.keyframe_max_side,
        threads=config.decode_threads,
        seekable=seekable,
    )


@dataclass
class VideoJob:
    probe: VideoProbe
    windows: list[ClipWindow]
    started: float
    results: dict[int, ClipResult] = field(default_factory=dict)


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
    failures: list[dict] = field(default_factory=list)


def completed_video_ids(config: CurationConfig) -> frozenset[str]:
    """Videos a resumed run skips: those committed ok whose shot and clip parts are all still there
    (a deleted table or part makes its videos redo), and failed ones too with retry_failed off."""
    videos = read_table(config.output, "videos", missing_ok=True)
    if config.retry_failed:
        videos = videos[videos["status"] == STATUS_OK]

    def intact(video_id: str, status: str) -> bool:
        return status != STATUS_OK or all(
            (table_path(config.output, table) / f"part-{video_id}.parquet").is_file() for table in ("shots", "clips")
        )

    return frozenset(v for v, status in zip(videos["video_id"], videos["status"]) if intact(v, status))


def run_pipeline(paths: list[str], config: CurationConfig) -> RunSummary:
    began = time.perf_counter()
    summary = RunSummary(videos_total=len(paths))
    done_ids = completed_video_ids(config)
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    max_in_flight = config.max_in_flight or 2 * cpus
    probe_task = ray.remote(probe_video).options(num_cpus=min(1.0, config.cpus_per_task))
    detect_task = ray.remote(detect_video_clip).options(num_cpus=config.cpus_per_task)
    config_ref = ray.put(config)
    done_ref = ray.put(done_ids)

    waiting_paths = deque(paths)
    waiting_clips: deque = deque()  # (video_id, window), detection before new probes
    in_flight: dict = {}  # ObjectRef -> ("probe", path) | ("clip", video_id, clip_index)
    jobs: dict[str, VideoJob] = {}
    pts_refs: dict[str, ray.ObjectRef] = {}
    seen_ids: set[str] = set()
    progress = Progress(len(paths))

    def submit() -> None:
        while len(in_flight) < max_in_flight and (waiting_clips or waiting_paths):
            if waiting_clips:
                video_id, window = waiting_clips.popleft()
                p = jobs[video_id].probe
                ref = detect_task.remote(
                    p.source_path, window, pts_refs[video_id], p.fps, p.rotation, config_ref, p.pts_reliable
                )
                in_flight[ref] = ("clip", video_id, window.clip_index)
            else:
                path = waiting_paths.popleft()
                in_flight[probe_task.remote(path, done_ref)] = ("probe", path)

    def fail(path: str, error: str, stage: str) -> None:
        commit_failure(path, error, stage, config)
        summary.videos_failed += 1
        summary.failures.append({"path": path, "stage": stage, "error": error})
        log.warning("failed: %s", error)
        progress.video_done(failed=True)

    submit()
    while in_flight:
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        ref = ready[0]
        kind, *key = in_flight.pop(ref)
        try:
            result = ray.get(ref)
        except (ray.exceptions.RayTaskError, ray.exceptions.WorkerCrashedError) as err:
            # A crashed worker (e.g. a decoder segfault or out of memory) fails only its video.
            path = key[0] if kind == "probe" else jobs[key[0]].probe.source_path
            result = (
                Failed(path, f"{path}: worker failed: {err}")
                if kind == "probe"
                else ClipResult(jobs[key[0]].windows[key[1]], error=f"worker failed: {err}")
            )
        if kind == "probe":
            path = key[0]
            if isinstance(result, Failed):
                fail(path, result.error, "probe")
            elif isinstance(result, Skipped) or result.video_id in seen_ids:
                if isinstance(result, Skipped):
                    summary.videos_skipped += 1
                else:
                    summary.duplicates += 1
                    log.info("%s has the same content as an earlier input; processed once", path)
                progress.video_done(skipped=True)
            else:
                seen_ids.add(result.video_id)
                overlap = max(round(config.overlap_seconds * result.fps), 2 * config.detector.min_scene_frames)
                if result.pts_reliable:
                    windows = plan_clips(result.num_frames, result.fps, config.clip_minutes, overlap)
                else:
                    windows = [ClipWindow(0, 0, result.num_frames, 0, result.num_frames)]
                jobs[result.video_id] = VideoJob(result, windows, time.perf_counter())
                pts_refs[result.video_id] = ray.put(result.pts)
                waiting_clips.extend((result.video_id, w) for w in windows)
        else:
            video_id, clip_index = key
            job = jobs[video_id]
            job.results[clip_index] = result
            summary.frames_decoded += result.frames_decoded
            summary.detect_task_seconds += result.seconds
            if len(job.results) == len(job.windows):
                del jobs[video_id], pts_refs[video_id]
                results = [job.results[i] for i in range(len(job.windows))]
                try:
                    row = commit_video(job.probe, job.windows, results, config, time.perf_counter() - job.started)
                except OSError as err:
                    if err.errno in OUTPUT_FULL:  # the output cannot take a failure row either: stop cleanly
                        raise
                    fail(job.probe.source_path, f"{job.probe.source_path}: could not write results: {err}", "write")
                    continue
                except Exception as err:  # e.g. a keyframe read failing on a file that changed mid-run
                    fail(job.probe.source_path, f"{job.probe.source_path}: could not write results: {err}", "write")
                    continue
                summary.clips += len(job.windows)
                if row["status"] == STATUS_OK:
                    summary.videos_ok += 1
                    summary.shots += row["num_shots"]
                    summary.hours_processed += job.probe.duration_s / 3600
                    progress.video_done(video_seconds=job.probe.duration_s, shots=row["num_shots"])
                else:
                    summary.videos_failed += 1
                    summary.failures.append({"path": job.probe.source_path, "stage": "detect", "error": row["error"]})
                    progress.video_done(failed=True)
        submit()
    progress.close()
    summary.wall_seconds = time.perf_counter() - began
    return summary
