"""The one driver every curation stage runs under, and the typed task it moves.

The job is a list of `Step`s in the order of the paper's data pipeline (curation/run.py builds
it). A `VideoTask` enters the first step and each step hands it to the next with `forward` once
its part is done: the probe step fills `task.probe`, split `task.clips`, detect `task.detected`,
the pass models (text, aesthetic) `task.signals`, reconcile `task.shots`. Steps whose work is heavy give it to their Ray side (a
`curation.stage.Stage`) through `work`; every Ray side runs on the driver's one `Executor`, which
bounds the items in flight over all stages. Everything is written from the driver process, by the
steps' driver side: a Ray worker never writes a table.

Tasks stream: a video is reconciled as soon as its clips are back while others are still probed.
Steps that work on the whole manifest (combine, annotate) do it in `finish`, which the driver
calls for each step in list order once every task has left the steps before it. A step may also
start on a task's partial results (`partial`): the pass models (OCR, aesthetics) take the shots of a
finished clip before the video is reconciled.

A failure anywhere ends its task with a failed row (`fail`): the later steps forget what they
started for it (`dropped`), and a re-run retries exactly that video.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from curation.progress import Progress
from curation.stage import Executor, Failure, Stage
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


class Step:
    """One stage of the job as the driver sees it.

    `name` is the stage's name in run.json and in failure rows. `worker` is its Ray side, if it has
    one (registered on the driver's executor; `workers` actors for an actor stage). The driver
    calls `start` once before any task, `enter` for each task that reaches the step, `partial`
    when an earlier step has part of a task's results, `dropped` when a task failed after
    reaching this step's predecessors, `finish` once every task has left the earlier steps (the
    place for work on the whole manifest), and `stop` when the run is interrupted.
    """

    name: str = "step"
    about: str = ""  # one line for run.json: what the stage does and where it runs
    worker: Stage | None = None
    workers: int | None = None

    def remotes(self) -> list[tuple[Stage, int | None]]:
        """The Ray sides the driver registers for this step, each with its actor count: `worker` by
        default; a step with a second one (annotate's local caption actors) adds it here. An actor
        stage's actors start only when its first item is queued (or `coming` warms them)."""
        return [(self.worker, self.workers)] if self.worker is not None else []

    @property
    def module(self) -> str:
        """The module that holds the stage's code, as run.json names it."""
        return type(self).__module__

    def start(self, driver: Driver) -> None:
        """Before the first task."""

    def enter(self, task: VideoTask, driver: Driver) -> None:
        """A task reached this step: the default passes it on."""
        driver.forward(self, task)

    def coming(self, source: str, task: VideoTask, driver: Driver) -> None:
        """Step `source` has started on `task`, which will reach this step: an actor stage starts its
        actors now, so their set-up (a model load) overlaps the earlier steps."""
        if self.worker is not None and self.worker.actors:
            driver.executor.warm(self.worker.name)

    def partial(self, source: str, task: VideoTask, payload: Any, driver: Driver) -> None:
        """Step `source` has part of `task`'s results (`payload`) before the task reaches this step."""

    def dropped(self, task: VideoTask, driver: Driver) -> None:
        """`task` ended as failed before reaching this step: forget what was started for it."""

    def finish(self, driver: Driver) -> None:
        """Every task has left the steps before this one (they are finished too)."""

    def stop(self, driver: Driver) -> None:
        """The run is interrupted (Ctrl-C, SIGTERM, a full disk): keep what is finished."""


class Driver:
    """Runs `steps` over tasks: the only place results are committed."""

    def __init__(self, steps: list[Step], max_in_flight: int, output=None, summary: RunSummary | None = None):
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.steps, self.output = list(steps), output
        self.executor = Executor(max_in_flight)
        for step in self.steps:
            for remote, workers in step.remotes():
                self.executor.add(remote, workers=workers)
        self.summary = summary or RunSummary()
        self.progress: Progress | None = None
        self.finished_at: dict[str, float] = {}  # seconds from the start of `run` to each step's finish
        self.after_finish = None  # called with a step's name as it finishes (the job records Ray's processes)
        self._position = {s.name: i for i, s in enumerate(self.steps)}
        self._tables: dict = {}  # (folder, table) -> the table, read once per run (see `table`)

    def step(self, name: str) -> Step:
        return self.steps[self._position[name]]

    def table(self, name: str, folder=None):
        """A manifest table as the whole-manifest steps see it (embed's catch-up, combine, annotate,
        run.json): read once per run and shared, until a step that writes it says so (`changed`)."""
        key = (str(folder if folder is not None else self.output), name)
        if key not in self._tables:
            self._tables[key] = read_table(folder if folder is not None else self.output, name, missing_ok=True)
        return self._tables[key]

    def changed(self, name: str) -> None:
        """Table `name` was written: the next `table(name)` reads it again."""
        self._tables = {key: frame for key, frame in self._tables.items() if key[1] != name}

    # -- what steps call -----------------------------------------------------------------------
    def work(self, step: Step, item: Any, on_done) -> None:
        """Give `item` to the step's Ray side; `on_done(result or Failure)` runs here when it is back."""
        self.executor.submit(step.worker.name, item, on_done)

    def forward(self, step: Step, task: VideoTask) -> None:
        """`step` is done with `task`: the next step takes it (a task past the last step has ended)."""
        position = self._position[step.name] + 1
        if position < len(self.steps):
            self.steps[position].enter(task, self)

    def partial(self, step: Step, task: VideoTask, payload: Any) -> None:
        for later in self.steps[self._position[step.name] + 1 :]:
            later.partial(step.name, task, payload, self)

    def announce(self, step: Step, task: VideoTask) -> None:
        """`step` has started on `task`: the later steps hear it is coming (`Step.coming`)."""
        for later in self.steps[self._position[step.name] + 1 :]:
            later.coming(step.name, task, self)

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

    def fail(self, step: Step, task: VideoTask, failure: Failure, recorded: bool = False) -> None:
        """The task ends as failed: its video row says why (`recorded`: the step wrote it already)."""
        task.status, task.errors = Status.FAILED, [*task.errors, failure]
        if not recorded:
            record_failure(self.output, task.path, failure.error, failure.stage)
            log.warning("failed (%s): %s", failure.stage, failure.error)
        self.summary.videos_failed += 1
        self.summary.video_ids.add(task.video_id)
        self.summary.failures.append({"path": task.path, "stage": failure.stage, "error": failure.error})
        self.progress.video_done(failed=True)
        for later in self.steps[self._position[step.name] + 1 :]:
            later.dropped(task, self)

    def drain(self) -> None:
        """Run until no item is queued or in flight (callbacks may queue more)."""
        self.executor.run()

    # -- the run -------------------------------------------------------------------------------
    def run(self, tasks: list[VideoTask]) -> RunSummary:
        """Every task through every step, then each step's `finish` in order."""
        began = time.perf_counter()
        self.summary.videos_total = len(tasks)
        self.progress = Progress(len(tasks))
        try:
            for step in self.steps:
                step.start(self)
            for task in tasks:
                self.steps[0].enter(task, self)
            self.drain()
            self.progress.close()
            for step in self.steps:
                step.finish(self)
                self.drain()
                self.finished_at[step.name] = time.perf_counter() - began
                if self.after_finish is not None:
                    self.after_finish(step.name)
        except BaseException:
            for step in self.steps:
                step.stop(self)
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
