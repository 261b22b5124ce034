"""Tests of `curation/stage.py`: a stage is one `Stage` in the driver with an optional `Remote` part
on Ray, and the job's modules use those two words and no others."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import curation
from curation.driver import Driver
from curation.stage import Remote, Resources, Stage
from curation.tasks import VideoTask

pytestmark = pytest.mark.usefixtures("stages_travel_by_value")


class Length(Remote):
    name, resources = "length", Resources(cpus=0.5)

    def process(self, path: str) -> int:
        return len(path)


class Lengths(Stage):
    """A stage that hands each task's path to its remote part and passes the task on when the answer is back."""

    name = "length"

    def __init__(self):
        self.remote, self.lengths = Length(), {}

    def enter(self, task, driver):
        def done(result):
            self.lengths[task.path] = result
            driver.forward(self, task)

        driver.work(self, task.path, done)


class Last(Stage):
    name = "last"

    def __init__(self):
        self.seen = []

    def enter(self, task, driver):
        self.seen.append(task.path)


def test_a_stage_gives_items_to_its_remote_part_and_passes_each_task_on_when_the_result_is_back(ray_local):
    measure, last = Lengths(), Last()
    assert measure.remotes() == [(measure.remote, None)] and Stage().remotes() == []
    Driver([measure, Stage(), last], max_in_flight=2).run([VideoTask("a.mp4"), VideoTask("longer.mp4")])
    assert measure.lengths == {"a.mp4": 5, "longer.mp4": 10}
    assert sorted(last.seen) == ["a.mp4", "longer.mp4"]  # the plain Stage between them passed both on


def job_classes():
    for module in pkgutil.iter_modules(curation.__path__):
        if module.name == "run":
            continue  # the entry point; it defines no stage
        loaded = importlib.import_module(f"curation.{module.name}")
        for _, value in inspect.getmembers(loaded, inspect.isclass):
            if value.__module__ == loaded.__name__:
                yield value


def test_the_job_has_one_word_for_a_stage_and_one_for_its_ray_part():
    classes = list(job_classes())
    stages = [c for c in classes if issubclass(c, Stage) and c is not Stage]
    remotes = [c for c in classes if issubclass(c, Remote) and c is not Remote]
    assert {"Probe", "Split", "Detect", "Reconcile", "Embed", "Combine", "Annotate"} <= {c.__name__ for c in stages}
    assert remotes and all(c.__name__.endswith("Remote") for c in remotes), [c.__name__ for c in remotes]
    assert not [c.__name__ for c in classes if c.__name__ in ("Step", "Worker") or c.__name__.endswith("Step")]
    for cls in stages:  # a stage's Ray part is `remote`, never `worker`
        assert "worker" not in vars(cls) and "workers" not in vars(cls), cls.__name__
