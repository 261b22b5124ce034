"""The reconcile stage (driver): one video's clip results -> shots on the source timeline, keyframe
files and committed table parts. Each clip owns a frame range and reports only its cuts; the merged
cut list re-applies the minimum scene length across clip boundaries (shots_from_cuts)."""

from __future__ import annotations

import time
from bisect import bisect_left
from pathlib import Path

from curation.config import CurationConfig
from curation.cuts import shots_from_cuts
from curation.driver import Driver
from curation.duplicates import find_duplicates
from curation.measures import Measure, merged
from curation.shot_filters import ShotFilter, evidence, filter_reason
from curation.stage import Failure, Stage
from curation.tasks import ClipResult, ClipWindow, VideoTask
from manifests.frames import read_shot_frames
from manifests.io import OUTPUT_FULL, tidy_batches, write_batch, write_bytes_atomic
from manifests.media import encode_jpeg
from manifests.probe import VideoProbe, path_id
from manifests.schema import SIGNAL_COLUMNS, ClipRecord, ShotRecord, Status, VideoRecord, clip_id, shot_id


def shot_rows(
    probe: VideoProbe,
    windows: list[ClipWindow],
    results: list[ClipResult],
    config: CurationConfig,
    filters: list[ShotFilter],
    measures: list[Measure] = (),
    signals: dict | None = None,
) -> list[ShotRecord]:
    """The video's shot rows: spans from the merged cuts, each measure's columns, repeats found
    among the video's shots (curation/duplicates.py), `signals` the pass models' columns per span,
    and the first filter's reason."""
    cuts = [c for r in results for c in r.cuts]
    forced = {c for r in results for c in r.forced}
    transitions = {t for r in results for t in r.transitions}
    spans = shots_from_cuts(cuts, probe.num_frames, config.shots.detector.min_scene_frames, forced)
    clip_starts = [w.start_frame for w in windows]
    samples = merged(results, [m.name for m in measures])
    shots = [evidence(probe, start, end, transitions, samples, measures, (signals or {}).get((start, end)))
             for start, end in spans]  # fmt: skip
    repeats = find_duplicates([s.values.get("signatures") for s in shots], config.shots.duplicate_similarity)
    rows = []
    for index, (shot, repeat) in enumerate(zip(shots, repeats)):
        if repeat is not None:
            shot.values["duplicate_of"] = shot_id(probe.video_id, spans[repeat[0]][0])
            shot.values["duplicate_similarity"] = repeat[1]
        reason = filter_reason(shot, config, filters)
        clip_index = max(i for i, s in enumerate(clip_starts) if s <= shot.start)
        row = probe.shot_row(shot.start, shot.end, index, clip_index, config.shots.detector.name, reason)
        for column in SIGNAL_COLUMNS:
            if shot.values.get(column) is not None:
                row[column] = shot.values[column]
        rows.append(row)
    return rows


def save_keyframes(rows: list[ShotRecord], results: list[ClipResult], output: Path, max_side: int) -> None:
    """One JPEG per shot: the sampled thumbnail nearest the shot's middle frame.

    Shots too short to contain a sample (or whose sample was lost) get their middle frame read
    from the source, which costs a seek; it is rare by construction.
    """
    thumbnails = {frame: jpeg for r in results for frame, jpeg in r.thumbnails.items()}
    sampled = sorted(thumbnails)
    for row in rows:
        middle = (row.start_frame + row.end_frame) // 2
        inside = sampled[bisect_left(sampled, row.start_frame) : bisect_left(sampled, row.end_frame)]
        if inside:
            frame = min(inside, key=lambda f: abs(f - middle))
            jpeg = thumbnails[frame]
        elif row.start_pts is not None:
            frame = middle
            jpeg = encode_jpeg(read_shot_frames(row, indices=[middle - row.start_frame], max_side=max_side)[0])
        else:
            continue
        relative = Path("keyframes") / row.video_id / f"{row.shot_id}.jpg"
        write_bytes_atomic(output / relative, jpeg)
        row.keyframe_frame, row.keyframe_path = frame, relative.as_posix()


def clip_rows(probe: VideoProbe, windows: list[ClipWindow], results: list[ClipResult]) -> list[ClipRecord]:
    return [
        ClipRecord(
            clip_id=clip_id(probe.video_id, w.clip_index),
            video_id=probe.video_id,
            clip_index=w.clip_index,
            start_frame=w.start_frame,
            end_frame=w.end_frame,
            decode_start_frame=w.decode_start,
            decode_end_frame=w.decode_end,
            start_s=probe.frame_seconds(w.start_frame),
            end_s=probe.frame_seconds(w.end_frame),
            num_cuts=len(r.cuts),
            frames_decoded=r.frames_decoded,
            status=Status.FAILED if r.error else Status.OK,
            error=r.error,
            processing_s=r.seconds,
        )  # fmt: skip
        for w, r in zip(windows, results)
    ]


def commit_video(
    probe: VideoProbe,
    windows: list[ClipWindow],
    results: list[ClipResult],
    config: CurationConfig,
    seconds: float,
    batch: CommitBatch,
    filters: list[ShotFilter],
    measures: list[Measure] = (),
    signals: dict | None = None,
) -> tuple[VideoRecord, list[ShotRecord]]:
    """A video's shots, clips and its row (the commit marker a resumed run checks), added to
    `batch`, which commits them with other videos (`manifests.io.write_batch`).

    A video with any failed clip is recorded as failed with no shots, so a re-run retries it
    instead of keeping a partial cut list.
    """
    errors = [r.error for r in results if r.error]
    rows: list[ShotRecord] = []
    if errors:
        video = probe.video_record(Status.FAILED, error="; ".join(errors), error_stage="detect", num_shots=0,
                                   num_clips=len(windows), processing_s=seconds)  # fmt: skip
    else:
        rows = shot_rows(probe, windows, results, config, filters, measures, signals)
        save_keyframes(rows, results, config.output, config.shots.keyframe_max_side)
        video = probe.video_record(Status.OK, num_shots=len(rows), num_clips=len(windows), processing_s=seconds)
    clips = clip_rows(probe, windows, results)
    # The batch also replaces an earlier failure row of this path (keyed by the path's id).
    batch.add(probe.video_id, {"shots": rows, "clips": clips, "videos": [video]}, [path_id(probe.source_path)])
    return video, rows


class CommitBatch:
    """Finished videos committed together: one part per table when `videos` videos are waiting or
    the oldest has waited `seconds` (checked as videos finish), and at the end of a run. A kill
    loses at most the videos waiting here; they are redone on resume."""

    def __init__(self, output: Path, videos: int, seconds: float):
        self.output, self.max_videos, self.max_seconds = output, videos, seconds
        self.rows: dict[str, list[dict]] = {"shots": [], "clips": [], "videos": []}
        self.covers: list[str] = []
        self.since: float | None = None
        self.batches = 0

    def add(self, video_id: str, rows: dict[str, list[dict]], replaces: list[str] = ()) -> None:
        for name, table_rows in rows.items():
            self.rows[name] += table_rows
        self.covers += [video_id, *replaces]
        if self.since is None:
            self.since = time.monotonic()
        if len(self.rows["videos"]) >= self.max_videos or time.monotonic() - self.since >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.covers:
            return
        write_batch(self.output, self.rows, self.covers)
        self.rows = {name: [] for name in self.rows}
        self.covers, self.since = [], None
        self.batches += 1


class Reconcile(Stage):
    """A video whose clips are all back: its shots on the source timeline, keyframes and table rows,
    committed in batches of videos (`CommitBatch`)."""

    name = "reconcile"
    about = "merge cuts on the source timeline, shots.parquet, keyframes (driver)"

    def __init__(self, config: CurationConfig, filters: list[ShotFilter], measures: list[Measure] = ()):
        self.config, self.filters, self.measures = config, filters, list(measures)
        self.batch = CommitBatch(config.output, config.commit_videos, config.commit_seconds)

    def start(self, driver: Driver) -> None:
        tidy_batches(self.config.output)  # a killed run's uncommitted batch parts go

    def enter(self, task: VideoTask, driver: Driver) -> None:
        results = [task.detected[i] for i in range(len(task.clips))]
        path = task.probe.source_path
        try:
            row, task.shots = commit_video(task.probe, task.clips, results, self.config,
                                           time.perf_counter() - task.started, self.batch, self.filters,
                                           self.measures, task.signals)  # fmt: skip
        except OSError as err:
            if err.errno in OUTPUT_FULL:  # the output cannot take a failure row either: stop cleanly
                raise
            return driver.fail(self, task, Failure(self.name, f"{path}: could not write results: {err}"))
        except Exception as err:  # e.g. a keyframe read failing on a file that changed mid-run
            return driver.fail(self, task, Failure(self.name, f"{path}: could not write results: {err}"))
        driver.summary.clips += len(task.clips)
        if row["status"] != Status.OK:  # a clip failed: the video's row says so already
            return driver.fail(self, task, Failure(row["error_stage"], row["error"]), recorded=True)
        driver.ok(task, row["num_shots"])
        driver.forward(self, task)

    def finish(self, driver: Driver) -> None:
        self.stop(driver)
        driver.changed("shots")  # the whole-manifest stages read what this run committed

    def stop(self, driver: Driver) -> None:
        """Finished videos are committed also when the run is interrupted."""
        self.batch.flush()
        tidy_batches(self.config.output)  # videos redone here leave no older rows behind
