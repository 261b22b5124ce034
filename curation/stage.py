"""What a curation stage is: a `Stage` (one entry of the job's list, run by the driver) with an
optional `Remote` part that runs on Ray, and the `Failure` an item comes back as when it fails.

A `Stage` lives in the driver process: it receives each `VideoTask` (`enter`), commits results
and hands the task on; only the driver writes tables. Its heavy work goes to its `Remote`: a name,
the resources one worker process needs, a `setup` run once per worker process (load a model, open
a client) and a `process` run per item. A stateless remote part runs as Ray tasks; one with
`actors=True` runs in long-lived Ray actors (a model loaded once each). Every remote part runs on
the driver's one `curation.executor.Executor`.

Words, one meaning each: a *stage* is a `Stage`; its *remote* part is a `Remote`; a *worker* is a
Ray worker process (a task's process or an actor); `finish` is a stage's whole-manifest work after
every task has passed; `partial` results are an earlier stage's results for part of a task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation.driver import Driver
    from curation.tasks import VideoTask


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


class Remote(ABC):
    """A stage's part that runs on Ray. Subclasses set `name` (the stage's), `resources` (and
    `actors=True` to keep state, a loaded model, across items in long-lived actors) and implement
    `process`."""

    name: str = "stage"
    resources: Resources = Resources()
    actors: bool = False  # True: `setup` once per actor (a model load); False: Ray tasks

    def setup(self) -> None:  # noqa: B027  (optional: most remote parts need no set-up)
        """Once per worker process, before its first item."""

    @abstractmethod
    def process(self, item: Any) -> Any:
        """One item -> its result, which the driver commits."""


@dataclass(frozen=True)
class Failure:
    """An item a stage could not process: which stage, and the error in one line."""

    stage: str
    error: str
    crashed: bool = False  # the worker or actor died (OOM kill, segfault), as opposed to the item raising


class Stage:
    """One stage of the job: one entry of the list in curation/run.py, run by the driver.

    `name` is the stage's name in run.json and in failure rows. `remote` is its Ray part, if it has
    one (a `Remote`, registered on the driver's executor; `actor_count` actors when it runs in
    actors). The driver calls `start` once before any task, `enter` for each task that reaches the
    stage, `coming` when an earlier stage has started on a task, `partial` when an earlier stage
    has part of a task's results, `dropped` when a task failed after reaching the stages before
    this one, `finish` once every task has left the earlier stages (the place for work on the whole
    manifest), and `stop` when the run is interrupted. A stage overrides only the hooks it needs.
    """

    name: str = "stage"
    about: str = ""  # one line for run.json: what the stage does and where it runs
    remote: Remote | None = None
    actor_count: int | None = None

    def remotes(self) -> list[tuple[Remote, int | None]]:
        """The Ray parts the driver registers for this stage, each with its actor count: `remote` by
        default; a stage with a second one (annotate's local caption actors) adds it here. Actors
        start only when their first item is queued (or `coming` warms them)."""
        return [(self.remote, self.actor_count)] if self.remote is not None else []

    @property
    def module(self) -> str:
        """The module that holds the stage's code, as run.json names it."""
        return type(self).__module__

    def start(self, driver: Driver) -> None:
        """Before the first task."""

    def enter(self, task: VideoTask, driver: Driver) -> None:
        """A task reached this stage: the default passes it on."""
        driver.forward(self, task)

    def coming(self, source: str, task: VideoTask, driver: Driver) -> None:
        """Stage `source` has started on `task`, which will reach this stage: a remote part in actors
        starts them now, so their set-up (a model load) overlaps the earlier stages."""
        if self.remote is not None and self.remote.actors:
            driver.executor.warm(self.remote.name)

    def partial(self, source: str, task: VideoTask, payload: Any, driver: Driver) -> None:
        """Stage `source` has part of `task`'s results (`payload`) before the task reaches this stage."""

    def dropped(self, task: VideoTask, driver: Driver) -> None:
        """`task` ended as failed before reaching this stage: forget what was started for it."""

    def finish(self, driver: Driver) -> None:
        """Every task has left the stages before this one (they are finished too)."""

    def stop(self, driver: Driver) -> None:
        """The run is interrupted (Ctrl-C, SIGTERM, a full disk): keep what is finished."""
