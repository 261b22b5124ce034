"""The one driver every curation stage runs under.

The job is a list of `Stage`s (curation/stage.py) in the order of the paper's data pipeline
(curation/run.py builds it). A `VideoTask` enters the first stage and each stage hands it to the
next with `forward` once its part is done: probe fills `task.probe`, split `task.clips`, detect
`task.detected`, the pass models (text, aesthetic) `task.signals`, reconcile `task.shots`. Stages
whose work is heavy give it to their `Remote` part through `work`; every remote part runs on the
driver's one `Executor`, which bounds the items in flight over all stages. Everything is written
from the driver process: a Ray worker never writes a table.

Tasks stream: a video is reconciled as soon as its clips are back while others are still probed.
Stages that work on the whole manifest (combine, annotate) do it in `finish`, which the driver
calls for each stage in list order once every task has left the stages before it. A stage may also
start on a task's partial results (`partial`): the pass models (OCR, aesthetics) take the shots of a
finished clip before the video is reconciled.

A failure anywhere ends its task with a failed row (`fail`): the later stages forget what they
started for it (`dropped`), and a re-run retries exactly that video.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from curation.executor import Executor
from curation.progress import Progress
from curation.stage import Failure, Stage
from curation.tasks import VideoTask
from manifests.io import read_table, write_part
from manifests.probe import failed_video
from manifests.schema import Status, VideoRecord

log = logging.getLogger("curation")


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
    wall_seconds: float = 0.0  # the streamed stages: from the first probe to the last video committed
    stage_seconds: dict = field(default_factory=dict)  # time inside the Ray workers, summed per stage
    failures: list[dict] = field(default_factory=list)
    video_ids: set[str] = field(default_factory=set)  # videos this run committed (ok or failed), not skipped ones


class Driver:
    """Runs `stages` over tasks: the only place results are committed."""

    def __init__(self, stages: list[Stage], max_in_flight: int, output=None, summary: RunSummary | None = None):
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages, self.output = list(stages), output
        self.executor = Executor(max_in_flight)
        for stage in self.stages:
            for remote, actors in stage.remotes():
                self.executor.add(remote, actors=actors)
        self.summary = summary or RunSummary()
        self.progress: Progress | None = None
        self.finished_at: dict[str, float] = {}  # seconds from the start of `run` to each stage's finish
        self.after_finish = None  # called with a stage's name as it finishes (the job records Ray's processes)
        self._position = {s.name: i for i, s in enumerate(self.stages)}
        self._tables: dict = {}  # (folder, table) -> the table, read once per run (see `table`)

    def stage(self, name: str) -> Stage:
        return self.stages[self._position[name]]

    def table(self, name: str, folder=None):
        """A manifest table as the whole-manifest stages see it (embed's catch-up, combine, annotate,
        run.json): read once per run and shared, until a stage that writes it says so (`changed`)."""
        key = (str(folder if folder is not None else self.output), name)
        if key not in self._tables:
            self._tables[key] = read_table(folder if folder is not None else self.output, name, missing_ok=True)
        return self._tables[key]

    def changed(self, name: str) -> None:
        """Table `name` was written: the next `table(name)` reads it again."""
        self._tables = {key: frame for key, frame in self._tables.items() if key[1] != name}

    # -- what stages call ----------------------------------------------------------------------
    def work(self, stage: Stage, item: Any, on_done) -> None:
        """Give `item` to the stage's remote part; `on_done(result or Failure)` runs here when it is back."""
        self.executor.submit(stage.remote.name, item, on_done)

    def forward(self, stage: Stage, task: VideoTask) -> None:
        """`stage` is done with `task`: the next stage takes it (a task past the last stage has ended)."""
        position = self._position[stage.name] + 1
        if position < len(self.stages):
            self.stages[position].enter(task, self)
        else:
            task.drop_frames()

    def partial(self, stage: Stage, task: VideoTask, payload: Any) -> None:
        for later in self.stages[self._position[stage.name] + 1 :]:
            later.partial(stage.name, task, payload, self)

    def announce(self, stage: Stage, task: VideoTask) -> None:
        """`stage` has started on `task`: the later stages hear it is coming (`Stage.coming`)."""
        for later in self.stages[self._position[stage.name] + 1 :]:
            later.coming(stage.name, task, self)

    def ok(self, task: VideoTask, shots: int) -> None:
        """The task's video is committed with its shots."""
        task.status = Status.OK
        self.summary.videos_ok += 1
        self.summary.video_ids.add(task.video_id)
        self.summary.shots += shots
        self.summary.hours_processed += task.probe.duration_s / 3600
        log.info("%s: committed, %d clips, %d shots, %.1f s of video", task.path, len(task.clips or ()), shots,
                 task.probe.duration_s)  # fmt: skip
        self.progress.video_done(video_seconds=task.probe.duration_s, shots=shots)

    def skip(self, task: VideoTask, duplicate: bool = False) -> None:
        """Nothing to do for the task: done by an earlier run, or the same content as an earlier input."""
        task.status, task.skipped = Status.OK, True
        if duplicate:
            self.summary.duplicates += 1
            log.info("%s has the same content as an earlier input; processed once", task.path)
        else:
            self.summary.videos_skipped += 1
        self.progress.video_done(skipped=True)

    def fail(self, stage: Stage, task: VideoTask, failure: Failure, recorded: bool = False) -> None:
        """The task ends as failed: its video row says why (`recorded`: the stage wrote it already)."""
        task.status, task.errors = Status.FAILED, [*task.errors, failure]
        if not recorded:
            record_failure(self.output, task.path, failure.error, failure.stage)
            log.warning("failed (%s): %s", failure.stage, failure.error)
        self.summary.videos_failed += 1
        self.summary.video_ids.add(task.video_id)
        self.summary.failures.append({"path": task.path, "stage": failure.stage, "error": failure.error})
        self.progress.video_done(failed=True)
        for later in self.stages[self._position[stage.name] + 1 :]:
            later.dropped(task, self)
        task.drop_frames()

    def drain(self) -> None:
        """Run until no item is queued or in flight (callbacks may queue more)."""
        self.executor.run()

    # -- the run -------------------------------------------------------------------------------
    def run(self, tasks: list[VideoTask]) -> RunSummary:
        """Every task through every stage, then each stage's `finish` in order."""
        began = time.perf_counter()
        self.summary.videos_total = len(tasks)
        self.progress = Progress(len(tasks))
        try:
            for stage in self.stages:
                stage.start(self)
            for task in tasks:
                self.stages[0].enter(task, self)
            self.drain()
            self.progress.close()
            for stage in self.stages:
                stage.finish(self)
                self.drain()
                self.finished_at[stage.name] = time.perf_counter() - began
                if self.after_finish is not None:
                    self.after_finish(stage.name)
        except BaseException:
            for stage in self.stages:
                stage.stop(self)
            raise
        finally:
            self.summary.stage_seconds = dict(self.executor.task_seconds)
            log.info("time inside the workers, per stage: %s",
                     ", ".join(f"{k} {v:.1f} s" for k, v in self.summary.stage_seconds.items()))  # fmt: skip
            self.executor.shutdown()
        return self.summary


def record_failure(output, path: str, error: str, stage: str) -> VideoRecord:
    """A failed video row keyed by the path (a video that could not be probed has no fingerprint)."""
    row = failed_video(path, error, stage)
    write_part(output, "videos", row.video_id, [row])
    return row
