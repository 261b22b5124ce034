"""Curation as stages on one executor: same outputs as before the refactor, every failure a row
(workers killed on purpose in each stage), and the one-decode-pass embedding frames."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from curation.config import CurationConfig
from curation.embed import ColorLayoutEmbedder
from curation.run import main, run_stages
from curation.shot_frames import FrameKeeper, FrameSpec, frames_for_shot, nearest
from curation.stage import Executor, Failure, Stage
from manifests import read_table
from manifests.io import ManifestError, write_part
from tests import crash_stages
from tests.curation_reference import FLAGS, record, write_videos

REFERENCE = Path(__file__).parent / "data" / "curation_reference.json"


@pytest.fixture(autouse=True, scope="module")
def _stages_travel_by_value():
    """Ray workers cannot import test modules: the stages defined here travel pickled by value."""
    import ray.cloudpickle

    for module in (sys.modules[__name__], crash_stages):
        ray.cloudpickle.register_pickle_by_value(module)
    yield
    for module in (sys.modules[__name__], crash_stages):
        ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="module")
def reference_videos(tmp_path_factory):
    return write_videos(tmp_path_factory.mktemp("reference_videos"))


def _same(a, b, path=""):
    """Equal, floats to 1e-6 relative (embeddings: float16 as stored)."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: columns {set(a) ^ set(b)}"
        for k in a:
            _same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-6), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def test_stages_keep_the_outputs_of_the_job_before_the_refactor(ray_local, tmp_path, reference_videos):
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
        _same(before[table], rows, table)
    assert {row["status"] for row in after["shot_embeddings"]} == {"ok"}


def test_one_decode_pass_embeddings_equal_embedding_from_a_separate_decode(ray_local, tmp_path, reference_videos):
    out = tmp_path / "out"
    assert main(["--input", *map(str, reference_videos), "--output", str(out), *FLAGS]) == 0
    before, after = json.loads(REFERENCE.read_text()), json.loads(json.dumps(record(out)))
    for table in ("videos", "clips", "shots"):  # detection is untouched by keeping frames
        _same(before[table], after[table], table)
    embeddings = read_table(out, "shot_embeddings")
    assert len(embeddings) == len(before["shot_embeddings"]) and set(embeddings["status"]) == {"ok"}
    _assert_equal_to_a_separate_decode(out)
    reference = {row["shot_id"]: np.asarray(row["embedding"], np.float32) for row in before["shot_embeddings"]}
    for row in embeddings.to_dict("records"):  # frames near the uniform ones describe the shot as before
        assert float(np.asarray(row["embedding"], np.float32) @ reference[row["shot_id"]]) > 0.99


def _assert_equal_to_a_separate_decode(out) -> None:
    """Every embedding equals the embedding of its recorded frames decoded again from the source."""
    from manifests.frames import read_shot_frames

    shots = read_table(out, "shots").set_index("shot_id")
    embeddings = read_table(out, "shot_embeddings")
    assert len(embeddings) and set(embeddings["status"]) == {"ok"}
    for row in embeddings.to_dict("records"):
        shot = shots.loc[row["shot_id"]].to_dict() | {"shot_id": row["shot_id"]}
        frames = [int(f) for f in row["frames"]]
        assert all(shot["start_frame"] <= f < shot["end_frame"] for f in frames)
        decoded = read_shot_frames(shot, indices=[f - shot["start_frame"] for f in frames], max_side=320)
        again = ColorLayoutEmbedder().embed([decoded])[0].astype(np.float16).astype(np.float32)
        np.testing.assert_allclose(np.asarray(row["embedding"], np.float32), again, atol=2e-3)


def test_one_decode_pass_on_rotated_variable_rate_video_with_the_content_detector(ray_local, tmp_path):
    """Rotation, variable frame rate, late cuts (the content detector's flash filter), shots across
    clip boundaries: the kept frames are still the frames a separate decode reads."""
    from curation.samples import write_synthetic_video

    lengths = [70, 55, 120, 64, 90]
    times, t = [], 0.0
    for i in range(sum(lengths)):
        times.append(t)
        t += 1 / 24 if i % 3 else 1 / 30  # variable frame rate
    video = write_synthetic_video(tmp_path / "rotated_vfr.mp4", lengths, size=(192, 128), rotation=90, seed=5,
                                  frame_times=times, gop=40)  # fmt: skip
    out = tmp_path / "out"
    assert main(["--input", str(video.path), "--output", str(out), "--detector", "content", "--clip-minutes",
                 f"{100 / 24 / 60}", "--min-shot-seconds", "1"]) == 0  # fmt: skip
    shots = read_table(out, "shots")
    assert len(shots) == len(lengths) and (shots["rotation"] == 90).all()
    _assert_equal_to_a_separate_decode(out)


def test_frame_keeper_is_exact_for_short_shots_and_bounded_for_long_ones():
    spec = FrameSpec(count=8, max_side=None)

    class Fake:  # stands in for av.VideoFrame: FrameSpec.image is replaced below
        def __init__(self, index):
            self.index = index

    image = lambda frame, rotation: np.full((2, 2, 3), frame.index % 256, np.uint8)  # noqa: E731
    object.__setattr__(spec, "image", image)  # frozen dataclass: a test double for the conversion
    keeper = FrameKeeper({"embed": spec}, start=0, end=1000, num_frames=1000, clip_index=0, min_scene_frames=15,
                         rotation=0, capacity=16)  # fmt: skip
    most = 0
    for index in range(1000):
        keeper.push(index, Fake(index))
        held = {id(frame) for _, frame in keeper.open.candidates} | {id(frame) for _, frame in keeper.recent}
        most = max(most, len(held))
        if index == 18:
            keeper.cut(16)  # emitted 2 frames late, as the adaptive detector does
    clip = keeper.finish()
    # bounded: the grid (capacity + room for late cuts) plus the frames a cut may still come late for
    # (the last min_scene_frames + 9), which the newest candidates share, and the frame just pushed
    assert most <= (16 + 8) + (15 + 8 + 1) + 1
    short = frames_for_shot(0, 16, [clip], "embed", spec)
    assert short.frames == spec.offsets(16)  # a short shot gets exactly the uniform frames
    long = frames_for_shot(16, 1000, [clip], "embed", spec)
    wanted = [16 + o for o in spec.offsets(984)]
    assert max(abs(a - b) for a, b in zip(long.frames, wanted)) <= 984 / 12
    assert [int(im[0, 0, 0]) for im in long.images] == [f % 256 for f in long.frames]
    assert nearest([5, 10], [0, 8, 12]) == [8, 8]


def test_viclip_frames_from_the_pass_equal_the_official_preprocessing():
    """ViCLIP's kept frames are resized to 224x224 from full size, as its preprocessing does; resizing
    them again to the same size changes nothing, so both paths feed the model the same pixels."""
    import cv2

    rng = np.random.default_rng(0)
    full = rng.integers(0, 256, (8, 240, 320, 3), np.uint8)
    spec = FrameSpec(count=8, rule="viclip", max_side=None, square=224)
    kept = spec.finish(full)
    again = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR) for f in kept])
    np.testing.assert_array_equal(kept, again)


# -- the executor ------------------------------------------------------------------------------


class Square(Stage):
    name = "square"

    def process(self, x):
        if x == 3:
            raise ValueError("three is not allowed")
        if x == 5:
            import os

            os._exit(1)
        return x * x


class Counter(Stage):
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
    executor.add(Counter(), workers=1)
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


# -- every stage: a crashed worker is a failed row, the job goes on, a re-run retries --------------


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
    report = run_stages(crash_inputs, config, swap={"embed": crash_stages.CrashingEmbed}).step("embed").report
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
    summary, report = driver.summary, driver.step("embed").report
    embeddings = read_table(out, "shot_embeddings")
    assert set(embeddings["status"]) == {"ok"} and report.shots_embedded == len(failed)
    assert summary.videos_skipped == 2


def test_a_crashed_media_task_fails_only_its_combination(ray_local, tmp_path, crash_inputs, monkeypatch):
    from curation.annotate import run_annotation
    from tests.fake_gemini import FakeGemini

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


def test_a_status_outside_the_vocabulary_is_refused_when_written(tmp_path):
    with pytest.raises(ManifestError, match="unknown status 'done'"):
        write_part(tmp_path, "videos", "x", [{"video_id": "x", "source_path": "/x.mp4", "status": "done"}])


def test_the_driver_moves_tasks_through_the_steps_in_order_and_ends_a_failed_one_for_the_later_steps(tmp_path):
    """The driver alone (steps without a Ray side): each task enters the steps in list order, a
    failure ends it with a failed row and tells only the steps after the failing one, `finish` runs
    once per step in order after every task has passed, and an interruption reaches every `stop`."""
    from curation.driver import Driver, Step, VideoTask

    log = []

    class Record(Step):
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
    assert driver.step("c") is steps[2] and list(driver.finished_at) == ["a", "b", "c"]

    class Interrupt(Record):
        def finish(self, driver):
            raise KeyboardInterrupt

    log.clear()
    with pytest.raises(KeyboardInterrupt):
        Driver([Record("a"), Interrupt("b")], max_in_flight=1, output=tmp_path).run([])
    assert log == [("a", "finish", None), ("a", "stop", None), ("b", "stop", None)]
    with pytest.raises(ValueError, match="unique"):
        Driver([Record("a"), Record("a")], max_in_flight=1)
