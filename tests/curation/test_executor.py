"""Tests of `curation/executor.py`: the one executor every curation stage's remote part runs on."""

from __future__ import annotations

import pytest

from curation.executor import Executor
from curation.stage import Failure, Remote

pytestmark = pytest.mark.usefixtures("stages_travel_by_value")


class Square(Remote):
    name = "square"

    def process(self, x):
        if x == 3:
            raise ValueError("three is not allowed")
        if x == 5:
            import os

            os._exit(1)
        return x * x


class Counter(Remote):
    name, actors = "counter", True

    def setup(self):
        self.setups = getattr(self, "setups", 0) + 1

    def process(self, x):
        if x == "die":
            import os

            os._exit(1)
        return (x, self.setups)


def test_executor_turns_exceptions_and_dead_workers_into_failures(ray_local):
    executor = Executor(max_in_flight=2)
    executor.add(Square())
    executor.add(Counter(), actors=1)
    results = {}
    for x in range(7):
        executor.submit("square", x, lambda r, x=x: results.__setitem__(x, r))
    for x in ("a", "die", "b"):
        executor.submit("counter", x, lambda r, x=x: results.__setitem__(x, r))
    executor.run()
    executor.shutdown()
    assert [results[x] for x in (0, 1, 2, 4, 6)] == [0, 1, 4, 16, 36]
    assert results[3] == Failure("square", "ValueError: three is not allowed")
    assert isinstance(results[5], Failure) and results[5].crashed
    assert isinstance(results["die"], Failure) and results["die"].crashed and results["die"].stage == "counter"
    # The actor after the crash is a new one, set up once; items before and after it are processed.
    assert results["a"] == ("a", 1) and results["b"] == ("b", 1)


class Slow(Remote):
    name = "slow"

    def process(self, x):
        import time

        time.sleep(0.3)
        return x


def test_an_interrupted_run_drops_its_items_without_cancelling_ray_tasks(ray_local, monkeypatch):
    """cancel() (Ctrl-C in annotation) drops what is queued and forgets what is in flight; it never
    calls ray.cancel, whose race with a task's reply kills the driver (Ray's own check)."""
    import ray

    def no_cancel(*args, **kwargs):
        raise AssertionError("ray.cancel must not be called")

    monkeypatch.setattr(ray, "cancel", no_cancel)
    executor = Executor(max_in_flight=2)
    executor.add(Slow())
    results = []

    def done(result):
        results.append(result)
        executor.cancel()  # interrupted while the other item is in flight and four are queued

    for x in range(6):
        executor.submit("slow", x, done)
    executor.run()
    assert len(results) == 1
    executor.submit("slow", 9, results.append)  # the executor goes on after the dropped work finishes
    executor.run()
    executor.shutdown()
    assert results[1:] == [9]  # nothing dropped came back, nothing queued ran
