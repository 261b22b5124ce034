"""The executor every curation stage's remote part runs on: Ray tasks and actors, a bound on the
items in flight, and every way an item can fail turned into a `Failure`.

`Executor` keeps a bounded number of items in flight over all stages (later stages first, so videos
finish and memory stays bounded) and hands each result, or a `Failure`, back to the callback given
at submission. Stateless remote parts run as Ray tasks whose worker processes run `setup` once;
those with `actors=True` run in a pool of Ray actors that set up once and are replaced when they
die. Results are committed by the driver in those callbacks; a worker never writes a table.

Every way an item can fail (an exception in `process`, a worker or actor process that dies, a
task killed for memory) comes back as a `Failure` naming the stage, so the job records a row
with status=failed and goes on; nothing ends the run but the driver itself failing.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curation.stage import Failure, Remote

log = logging.getLogger("curation")


_SET_UP: dict[str, Remote] = {}  # per worker process: remote parts whose setup already ran, by token


def _run_task(stage: Remote, item: Any) -> Any:
    """A stateless stage's item in a Ray task; `setup` runs once per worker process and stage."""
    ready = _set_up(stage)
    began = time.perf_counter()
    result = ready.process(item)
    return result, time.perf_counter() - began


def _set_up(stage: Remote) -> Remote:
    """The stage as set up in this worker process: `setup` runs the first time only (a warm-up task
    sent by `prestart` runs just this, so the worker starts and imports the stage's code early)."""
    token = getattr(stage, "_token", None) or id(stage)
    if token not in _SET_UP:
        stage.setup()
        _SET_UP[token] = stage
    return _SET_UP[token]


class _Actor:
    """The body of an actor: one remote part, set up once."""

    def __init__(self, stage: Remote):
        self.stage = stage
        stage.setup()

    def process(self, item: Any) -> Any:
        began = time.perf_counter()
        result = self.stage.process(item)
        return result, time.perf_counter() - began


def _complete_errors() -> tuple[type, ...]:
    from manifests.frames import VideoReadError
    from manifests.io import ManifestError
    from manifests.probe import ProbeError
    from model.weights import CheckpointError

    return ProbeError, VideoReadError, ManifestError, CheckpointError


def failure(stage: str, err: BaseException, crashes: int = 1) -> Failure:
    """The Failure of an item whose result Ray could not give: the item's own error (raised in
    `process`), or a crash of the worker or actor that held it (any other Ray error), its `crashes`-th."""
    import ray

    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.cause if getattr(err, "cause", None) is not None else err
        if isinstance(cause, _complete_errors()):
            return Failure(stage, str(cause))  # our own errors name the file and what to do already
        if not isinstance(cause, ray.exceptions.RayError):
            return Failure(stage, f"{type(cause).__name__}: {cause}")
    kind = type(err).__name__
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    times = f" {crashes} times" if crashes > 1 else ""
    return Failure(stage, f"worker crashed{times} ({kind}){': ' + first if first else ''}; the item is retried on the "
                   "next run", crashed=True)  # fmt: skip


@dataclass
class _Pool:
    stage: Remote
    size: int
    remote: Any = None  # the remote function, or the actor class
    actors: list = field(default_factory=list)
    idle: deque = field(default_factory=deque)
    restarts: int = 0
    stage_ref: Any = None


@dataclass
class _Pending:
    pool: _Pool
    item: Any
    on_done: Callable[[Any], None]
    actor: Any = None
    method: str = "process"
    crashes: int = 0  # workers or actors lost while they held this item


# Times an item is given to a new worker after the one holding it was lost. Two: when a node is lost,
# the first replacement actor can be placed on that node before Ray has marked it dead (seen in the
# node-loss test), and dies with it; the second lands on a live node.
CRASH_RETRIES = 2


class Executor:
    """Runs items of many stages on Ray with at most `max_in_flight` task items at once.

    `submit(stage, item, on_done)` queues an item; `run()` drives everything until no work is
    left, calling `on_done(result)` on the driver as each result (or `Failure`) arrives. Callbacks
    may submit more items (to any stage), which is how a video streams from stage to stage.
    """

    WAKE_SECONDS = 1.0

    def __init__(self, max_in_flight: int):
        self.max_in_flight = max(1, max_in_flight)
        self._pools: dict[str, _Pool] = {}
        self._order: list[str] = []  # stage names in registration order: later stages go first
        self._queues: dict[str, deque] = {}
        self._in_flight: dict[Any, _Pending] = {}
        self.failures: dict[str, int] = {}
        self.while_waiting: list[Callable[[], None]] = []  # called every WAKE_SECONDS while nothing finishes
        self.task_seconds: dict[str, float] = {}  # time spent inside `process`, summed over workers
        self.items: dict[str, int] = {}

    def add(self, stage: Remote, actors: int | None = None) -> None:
        """Register a stage's remote part; one that runs in actors gets `actors` of them (created
        when first needed)."""
        import ray

        options = {"num_cpus": stage.resources.cpus, "num_gpus": stage.resources.gpus}
        pool = _Pool(stage, actors or 1)
        if stage.actors:
            pool.remote = ray.remote(_Actor).options(max_restarts=0, **options)
        else:
            pool.remote = ray.remote(_run_task).options(max_retries=0, **options)
        self._pools[stage.name] = pool
        self._order.append(stage.name)
        self._queues[stage.name] = deque()

    def submit(self, stage: Remote | str, item: Any, on_done: Callable[[Any], None]) -> None:
        name = stage if isinstance(stage, str) else stage.name
        self._queues[name].append(_Pending(self._pools[name], item, on_done))

    def prestart(self, stage: Remote | str, count: int) -> None:
        """Start `count` task workers for a stage now (process start and imports take a second or
        more each), so they are ready when its items arrive; Ray keeps idle workers for reuse."""
        import ray

        pool = self._pools[stage if isinstance(stage, str) else stage.name]
        if pool.stage.actors or count < 1:
            return
        self._stage_ref(pool)
        warm = ray.remote(_set_up).options(num_cpus=pool.stage.resources.cpus, num_gpus=pool.stage.resources.gpus)
        for _ in range(count):
            warm.remote(pool.stage_ref)  # not awaited: the worker stays, set up, for the stage's tasks

    def _stage_ref(self, pool: _Pool):
        import ray

        if pool.stage_ref is None:
            pool.stage._token = uuid.uuid4().hex  # one setup per worker for this run's stage
            pool.stage_ref = ray.put(pool.stage)
        return pool.stage_ref

    def warm(self, stage: Remote | str) -> None:
        """Start an actor stage's workers now, so their set-up (a model load) overlaps earlier stages."""
        self._start_actors(self._pools[stage if isinstance(stage, str) else stage.name])

    def _start_actors(self, pool: _Pool) -> None:
        while len(pool.actors) < pool.size:
            actor = pool.remote.remote(pool.stage)
            pool.actors.append(actor)
            pool.idle.append(actor)

    def _replace(self, pool: _Pool, actor) -> None:
        """A dead actor is dropped and a fresh one (set up again) takes its place."""
        import ray

        if actor in pool.actors:
            pool.actors.remove(actor)
            try:
                ray.kill(actor)
            except Exception:  # already gone
                pass
            pool.restarts += 1
            self._start_actors(pool)

    def _dispatch(self) -> None:

        task_slots = self.max_in_flight - sum(1 for p in self._in_flight.values() if not p.pool.stage.actors)
        for name in reversed(self._order):
            pool, queue = self._pools[name], self._queues[name]
            if pool.stage.actors:
                if queue:
                    self._start_actors(pool)
                while queue and pool.idle:
                    pending = queue.popleft()
                    pending.actor = pool.idle.popleft()
                    self._in_flight[pending.actor.process.remote(pending.item)] = pending
            else:
                if queue:
                    self._stage_ref(pool)
                while queue and task_slots > 0:
                    pending = queue.popleft()
                    self._in_flight[pool.remote.remote(pool.stage_ref, pending.item)] = pending
                    task_slots -= 1

    def run(self) -> None:
        import ray

        self._dispatch()
        while self._in_flight:
            wake = self.WAKE_SECONDS if self.while_waiting else None  # no hooks: wait for the next result alone
            ready, _ = ray.wait(list(self._in_flight), num_returns=1, timeout=wake)
            if not ready:
                for hook in self.while_waiting:
                    hook()
                continue
            pending = self._in_flight.pop(ready[0])
            pool = pending.pool
            try:
                result, seconds = ray.get(ready[0])
                name = pool.stage.name
                self.task_seconds[name] = self.task_seconds.get(name, 0.0) + seconds
                self.items[name] = self.items.get(name, 0) + 1
            except ray.exceptions.RayError as err:
                result = failure(pool.stage.name, err, crashes=pending.crashes + 1)
                if pending.actor is not None and result.crashed:
                    log.warning("%s: an actor died (%s); starting a new one", pool.stage.name, result.error)
                    self._replace(pool, pending.actor)
                    pending.actor = None
                if result.crashed and pending.crashes < CRASH_RETRIES:
                    # A lost worker, actor or node (a preempted spot node, an OOM kill) is retried,
                    # elsewhere; an item that takes down its worker every time is a failed row.
                    pending.crashes += 1
                    log.warning("%s: %s; retrying the item", pool.stage.name, result.error)
                    self._queues[pool.stage.name].appendleft(pending)
                    self._dispatch()
                    continue
                self.failures[pool.stage.name] = self.failures.get(pool.stage.name, 0) + 1
            if pending.actor is not None:
                pool.idle.append(pending.actor)
            pending.on_done(result)
            self._dispatch()

    def cancel(self) -> None:
        """Drop queued items and forget the ones in flight (an interrupted run): their results are
        never handed on. They are not `ray.cancel`led: a cancel that crosses a task's reply makes
        Ray's core worker fail a check and kill the driver outright ("Tried to complete task that
        was not pending", ray-project/ray#54798; it took down a CI run), which loses what the
        interrupt was meant to keep. A task in flight finishes on its own (what it writes is written
        whole); actors are killed by `shutdown`, and the job's own local Ray is stopped with it."""
        for queue in self._queues.values():
            queue.clear()
        self._in_flight.clear()

    def shutdown(self) -> None:
        import ray

        for pool in self._pools.values():
            for actor in pool.actors:
                try:
                    ray.kill(actor)
                except Exception:
                    pass
            pool.actors.clear()
            pool.idle.clear()
