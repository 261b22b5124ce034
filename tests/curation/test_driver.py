"""Tests of `curation/driver.py`: the one driver every curation stage runs under, and the typed task
it moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curation.config import CurationConfig
from curation.run import main, run_stages
from curation.stage import Failure, Stage
from manifests import read_table
from tests.support import crash_stages
from tests.support.curation_reference import FLAGS, record
from tests.support.reference_check import REFERENCE, assert_same_rows

pytestmark = pytest.mark.usefixtures("stages_travel_by_value")


@pytest.fixture()
def crash_inputs(tmp_path, reference_videos):
    folder = tmp_path / "inputs"
    folder.mkdir()
    good = shutil.copy(reference_videos[0], folder / "good.mp4")
    bad = shutil.copy(reference_videos[1], folder / "crash.mp4")
    return [str(good), str(bad)]


def _config(out, inputs):
    return CurationConfig(inputs=inputs, output=out, shots={"clip_minutes": 96 / 24 / 60, "min_shot_seconds": 1},
                          combine={"min_shot_frames": 20, "within": "video", "scenes": 2})  # fmt: skip


def test_the_reference_videos_curate_to_the_recorded_manifests_row_for_row(ray_local, tmp_path, reference_videos):
    """The manifests of the pre-refactor job (tests/data/curation_reference.json), row for row, when
    embedding frames are read from the source as that job did."""
    out = tmp_path / "out"
    assert main(["--input", *map(str, reference_videos), "--output", str(out), *FLAGS,
                 "--embed-frames-from", "source"]) == 0  # fmt: skip
    before = json.loads(REFERENCE.read_text())
    after = json.loads(json.dumps(record(out)))
    for table in before:
        # Columns added since (embedding status) are null/ok in the new rows and absent before.
        rows = [{k: v for k, v in row.items() if k in before[table][0]} for row in after[table]]
        assert_same_rows(before[table], rows, table)
    assert {row["status"] for row in after["shot_embeddings"]} == {"ok"}


@pytest.mark.parametrize("stage", ["probe", "detect"])
def test_a_crashed_probe_or_detect_worker_fails_only_its_video(ray_local, tmp_path, crash_inputs, stage):
    out = tmp_path / "out"
    crashing = {"probe": crash_stages.CrashingProbe, "detect": crash_stages.CrashingDetect}[stage]
    summary = run_stages(crash_inputs, _config(out, crash_inputs), swap={stage: crashing}).summary
    videos = read_table(out, "videos").set_index("source_path")
    good, bad = (videos.loc[str(Path(p).resolve())] for p in crash_inputs)
    assert good["status"] == "ok" and bad["status"] == "failed"
    assert "worker crashed" in bad["error"] and bad["error_stage"] == stage
    assert summary.videos_ok == 1 and summary.videos_failed == 1
    # The re-run, with nothing crashing, retries exactly the failed video.
    summary = run_stages(crash_inputs, _config(out, crash_inputs)).summary
    assert summary.videos_ok == 1 and summary.videos_skipped == 1
    assert set(read_table(out, "videos")["status"]) == {"ok"}


def test_a_crashed_embedding_actor_fails_only_its_shots_and_is_restarted(ray_local, tmp_path, crash_inputs):
    out = tmp_path / "out"
    config = _config(out, crash_inputs)
    report = run_stages(crash_inputs, config, swap={"embed": crash_stages.CrashingEmbed}).stage("embed").report
    embeddings = read_table(out, "shot_embeddings")
    shots = read_table(out, "shots")
    crashed_video = shots.loc[shots["source_path"].str.endswith("crash.mp4"), "video_id"].iloc[0]
    failed = embeddings[embeddings["status"] == "failed"]
    assert set(failed["video_id"]) == {crashed_video} and failed["embedding"].isna().all()
    assert set(failed["error_stage"]) == {"embed"} and failed["error"].str.contains("worker crashed").all()
    ok = embeddings[embeddings["status"] == "ok"]
    assert len(ok) and crashed_video not in set(ok["video_id"])
    assert report.shot_errors == len(failed)
    from manifests.inspect import text_report

    assert f"[embed] {len(failed)} shots of " in text_report(out)  # inspect lists item failures too
    # A re-run embeds only the failed shots (read from the source) and the table ends complete.
    driver = run_stages(crash_inputs, config)
    summary, report = driver.summary, driver.stage("embed").report
    embeddings = read_table(out, "shot_embeddings")
    assert set(embeddings["status"]) == {"ok"} and report.shots_embedded == len(failed)
    assert summary.videos_skipped == 2


def test_a_crashed_media_task_fails_only_its_combination(ray_local, tmp_path, crash_inputs, monkeypatch):
    from curation.annotate import run_annotation
    from tests.support.fake_gemini import FakeGemini

    out = tmp_path / "out"
    with FakeGemini() as server:
        config = _config(out, crash_inputs)
        config.annotate = section = config.annotate.model_copy(update={"base_url": server.url, "rpm": 6000.0})
        # The whole job, with the media tasks of one video killing their workers.
        run_stages(crash_inputs, config, api_key="test-key", swap={"media": crash_stages.CrashingMedia})
        combos = read_table(out, "combinations")
        assert combos["video_id"].nunique() == 2
        monkeypatch.setenv("GEMINI_API_KEY", "test-key")
        annotations = read_table(out, "annotations")
        shots = read_table(out, "shots")
        crashed_video = shots.loc[shots["source_path"].str.endswith("crash.mp4"), "video_id"].iloc[0]
        failed = annotations[annotations["status"] == "failed"]
        assert set(failed["video_id"]) == {crashed_video} and set(failed["error_stage"]) == {"media"}
        assert failed["error"].str.contains("worker crashed").all()
        assert set(annotations.loc[annotations["video_id"] != crashed_video, "status"]) == {"ok"}
        run_annotation(out, section)  # the re-run retries them
        assert set(read_table(out, "annotations")["status"]) == {"ok"}


def test_the_driver_moves_tasks_through_the_stages_in_order_and_ends_a_failed_one_for_the_later_stages(tmp_path):
    """The driver alone (stages without a remote part): each task enters the stages in list order, a
    failure ends it with a failed row and tells only the stages after the failing one, `finish` runs
    once per stage in order after every task has passed, and an interruption reaches every `stop`."""
    from curation.driver import Driver, VideoTask

    log = []

    class Record(Stage):
        def __init__(self, name):
            self.name = name

        def enter(self, task, driver):
            log.append((self.name, "enter", task.path))
            driver.forward(self, task)

        def dropped(self, task, driver):
            log.append((self.name, "dropped", task.path))

        def finish(self, driver):
            log.append((self.name, "finish", None))

        def stop(self, driver):
            log.append((self.name, "stop", None))

    class FailBad(Record):
        def enter(self, task, driver):
            log.append((self.name, "enter", task.path))
            if "bad" in task.path:
                return driver.fail(self, task, Failure(self.name, f"{task.path}: no good"))
            driver.forward(self, task)

    steps = [Record("a"), FailBad("b"), Record("c")]
    driver = Driver(steps, max_in_flight=2, output=tmp_path)
    summary = driver.run([VideoTask("good.mp4"), VideoTask("bad.mp4")])
    assert log == [("a", "enter", "good.mp4"), ("b", "enter", "good.mp4"), ("c", "enter", "good.mp4"),
                   ("a", "enter", "bad.mp4"), ("b", "enter", "bad.mp4"), ("c", "dropped", "bad.mp4"),
                   ("a", "finish", None), ("b", "finish", None), ("c", "finish", None)]  # fmt: skip
    assert summary.videos_failed == 1 and summary.failures[0]["stage"] == "b"
    row = read_table(tmp_path, "videos").iloc[0]
    assert row["status"] == "failed" and row["error"] == "bad.mp4: no good" and row["error_stage"] == "b"
    assert driver.stage("c") is steps[2] and list(driver.finished_at) == ["a", "b", "c"]

    class Interrupt(Record):
        def finish(self, driver):
            raise KeyboardInterrupt

    log.clear()
    with pytest.raises(KeyboardInterrupt):
        Driver([Record("a"), Interrupt("b")], max_in_flight=1, output=tmp_path).run([])
    assert log == [("a", "finish", None), ("a", "stop", None), ("b", "stop", None)]
    with pytest.raises(ValueError, match="unique"):
        Driver([Record("a"), Record("a")], max_in_flight=1)


def test_after_embedding_a_run_reads_the_shots_table_once_and_shares_it(
    ray_local, tmp_path, multi_shot_video, monkeypatch
):
    import importlib

    reads = []
    for name in ("curation.driver", "curation.embed", "curation.combine", "curation.annotate", "curation.run"):
        module = importlib.import_module(name)
        original = module.read_table

        def counting(folder, table, *args, _original=original, _module=name, **kwargs):
            if table == "shots":
                reads.append(_module)
            return _original(folder, table, *args, **kwargs)

        monkeypatch.setattr(module, "read_table", counting)
    out = tmp_path / "out"
    summary = run_stages([str(multi_shot_video.path)], _config(out, [str(multi_shot_video.path)])).summary
    assert summary.videos_ok == 1 and len(read_table(out, "combinations"))
    assert reads == ["curation.driver"]  # embed's catch-up, combine, annotate and run.json share one read
