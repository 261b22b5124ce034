"""Tests of `curation/annotate.py`: annotation stage: Gemini captions for every combination (and,
with --caption-shots, every shot)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
from google.genai import types

from curation.config import AnnotateConfig
from manifests import read_table
from tests.support.annotation import SECRET, annotator, parts, run_job
from tests.support.fake_gemini import FakeGemini, error, reply, valid_reply
from tests.support.jobs import job


def item_of(body: dict) -> int:
    """The item a request belongs to, from the 'item K' label the test puts in its parts."""
    for content in body["contents"]:
        for part in content.get("parts", []):
            if part.get("text", "").startswith("item "):
                return int(part["text"].split()[1])
    raise AssertionError("request without an item label")


@pytest.mark.slow
def test_job_annotates_caches_and_never_leaks_the_key(
    ray_local, tmp_path, multi_shot_video, monkeypatch, capfd, caplog
):
    out = tmp_path / "out"
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with FakeGemini() as server:
        # No key: nothing is sent, rows are unannotated and the run says how to enable annotation.
        assert run_job(out, multi_shot_video, "--gemini-base-url", server.url) == 0
        assert len(server.requests) == 0
        notes = read_table(out, "annotations")
        assert (notes["status"] == "unannotated").all() and "GEMINI_API_KEY" in notes["error"].iloc[0]
        assert "set GEMINI_API_KEY" in capfd.readouterr().out

        monkeypatch.setenv("GEMINI_API_KEY", SECRET)
        assert run_job(out, multi_shot_video, "--gemini-base-url", server.url, "--gemini-input", "video") == 0
        paid = len(server.requests)
        assert paid == 1 + 3  # one combination, three ok shots
        assert all(r["headers"]["x-goog-api-key"] == SECRET for r in server.requests)
        assert any(p.get("inlineData", {}).get("mime_type") == "video/mp4"
                   for p in server.requests[0]["body"]["contents"][0]["parts"])  # fmt: skip
        notes = read_table(out, "annotations")
        assert notes["status"].tolist() == ["ok"] and len(notes["captions"].iloc[0]) == 3
        captions = read_table(out, "shot_captions")
        assert (captions["status"] == "ok").all() and len(captions) == 3
        record = json.loads((out / "run.json").read_text())
        assert record["relevance"]["annotation"]["combinations"]["requests"] == 1
        from manifests.inspect import html_report

        assert notes["captions"].iloc[0][0] in html_report(out).read_text()  # captions under the keyframes

        # Re-run: everything comes from the cache, nothing is paid twice.
        assert run_job(out, multi_shot_video, "--gemini-base-url", server.url, "--gemini-input", "video") == 0
        assert len(server.requests) == paid
        record = json.loads((out / "run.json").read_text())
        assert record["relevance"]["annotation"]["combinations"]["cache_hits"] == 1
        assert read_table(out, "annotations")["requests"].tolist() == [0]

    logged = capfd.readouterr()
    assert SECRET not in logged.out + logged.err + caplog.text
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_per_item_requests_are_exact_under_concurrency():
    """Eight items in flight at once with different delays; some retried, some re-asked."""
    attempts: dict[int, int] = {}
    lock = threading.Lock()

    def script(i, body):
        item = item_of(body)
        with lock:
            attempts[item] = attempts.get(item, 0) + 1
            n = attempts[item]
        delay = 0.05 * (item % 3)
        if item % 4 == 1 and n == 1:
            return (*error(503, "UNAVAILABLE"), delay)  # retried
        if item % 4 == 2 and n == 1:
            return (*reply(valid_reply(1)), delay)  # wrong shot count: re-asked
        return (*reply(valid_reply(2), thoughts=7), delay)

    with FakeGemini(script) as server:
        gemini = annotator(server, concurrency=4)
        results = {}

        def run(item):
            results[item] = gemini.annotate([types.Part.from_text(text=f"item {item}")] + parts(2), 2)

        threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    received = {k: sum(item_of(r["body"]) == k for r in server.requests) for k in range(8)}
    assert {k: r.requests for k, r in results.items()} == received
    assert sum(r.requests for r in results.values()) == len(server.requests) == 8 + 2 + 2
    assert all(r.status == "ok" for r in results.values())
    assert all(r.thinking_tokens == 7 for r in results.values())  # thinking recorded apart from output


@pytest.mark.slow
def test_ctrl_c_during_annotation_sends_nothing_more_and_keeps_what_is_done(
    ray_local, tmp_path, multi_shot_video, monkeypatch
):
    import os
    import signal

    from curation.annotate import Annotate, annotate_items
    from curation.driver import Driver
    from curation.gemini import ReplyCache
    from curation.run import main

    out = tmp_path / "out"
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert run_job(out, multi_shot_video) == 0
    shots = read_table(out, "shots")
    shot = shots[shots["status"] == "ok"].iloc[0].to_dict()
    items = [(f"item-{k}", [shot]) for k in range(20)]
    with FakeGemini(lambda i, body: (*reply(valid_reply(1)), 0.3)) as server:
        settings = AnnotateConfig(base_url=server.url, timeout=5.0, rpm=60000.0, concurrency=2)
        step = Annotate(settings, tmp_path, api_key=SECRET)  # the job's annotate stage, on its own driver
        driver, cache = Driver([step], max_in_flight=4), step.cache

        def interrupt_after_four():
            while len(server.requests) < 4:
                time.sleep(0.01)
            # A real SIGINT, as Ctrl-C sends (`_thread.interrupt_main` only sets a flag, which a busy
            # process can drop: it failed that way once in a full CI run).
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt_after_four, daemon=True).start()
        try:
            results, summary = annotate_items(items, step, driver)
        finally:
            driver.executor.shutdown()
        time.sleep(0.5)  # in-flight requests finish; nothing queued may start
        sent = len(server.requests)
    assert summary.interrupted and sent <= 6  # 4 sent, at most the 2 in flight finish; 14 never go
    done = [k for k, r in results.items() if r.status == "ok"]
    assert done and all(results[k].status == "unannotated" and not results[k].final for k in results if k not in done)
    assert all(cache.get(ReplyCache.key(k, settings.model, "frames")) for k in done)  # paid replies are kept
    # The job turns the interrupt into its message and exit code.
    monkeypatch.setattr("curation.run.run", lambda argv: (_ for _ in ()).throw(KeyboardInterrupt))
    assert main(["--output", str(out)]) == 130


@pytest.mark.slow
def test_a_dangling_combination_is_a_failed_row_and_the_run_goes_on(ray_local, tmp_path, multi_shot_video):
    from manifests.io import remove_part

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(multi_shot_video.path, videos / name)
    (videos / "b.mp4").write_bytes((videos / "b.mp4").read_bytes() + b"\0")  # another file, another video id
    out = tmp_path / "out"
    assert job(out, videos) == 0
    rows = read_table(out, "videos")
    moved = rows[rows["source_path"].str.endswith("a.mp4")]["video_id"].iloc[0]
    remove_part(out, "shots", moved)  # its shots are gone ...
    (videos / "a.mp4").rename(tmp_path / "a-moved.mp4")  # ... and its source moved away
    for _ in range(2):  # every re-run, not only the first
        assert job(out, videos) == 0
        notes = read_table(out, "annotations")
        dangling = notes[notes["video_id"] == moved]
        assert len(dangling) and (dangling["status"] == "failed").all()
        assert dangling["error"].str.contains("is not in shots.parquet").all()
        assert (dangling["error_stage"] == "media").all()
        assert (notes[notes["video_id"] != moved]["status"] == "unannotated").all()  # the others go on


def test_annotation_records_write_the_same_table_as_the_data_frame_rows_they_replaced(tmp_path):
    """Before the records, annotation rows were dicts written through pandas (DataFrame, groupby
    video); the records go straight to Arrow. Both give the same table, nulls and structs included."""
    import pandas as pd

    from curation.annotate import write_by_video
    from manifests.io import write_part
    from manifests.schema import AnnotationRecord, Status

    rows = [
        AnnotationRecord(combination_id="c1", video_id="v2", shot_ids=["a", "b"], captions=["Actor1 sits.", "Actor1 runs."],
                         characters=[{"name": "Actor1", "description": "a tall man"}], background="a cafe",
                         model="gemini-2.5-flash", prompt_version="3", input_mode="frames", status=Status.OK,
                         requests=1, prompt_tokens=900, output_tokens=80, thinking_tokens=0, from_cache=False),
        AnnotationRecord(combination_id="c2", video_id="v1", shot_ids=["c", "d"], status=Status.UNANNOTATED,
                         error="no key", model="gemini-2.5-flash", requests=0, from_cache=False),
        AnnotationRecord(combination_id="c3", video_id="v2", shot_ids=["e", "f"], characters=[], status=Status.ERROR,
                         error="HTTP 500", error_stage="request", requests=3),
    ]  # fmt: skip
    write_by_video(tmp_path / "records", "annotations", rows)
    frame = pd.DataFrame([row.as_dict() for row in rows])  # the path before records
    for video_id, part in frame.groupby("video_id"):
        write_part(tmp_path / "frames", "annotations", video_id, part)
    new, old = (read_table(tmp_path / name, "annotations") for name in ("records", "frames"))
    pd.testing.assert_frame_equal(new, old)
    assert new.loc[new["combination_id"] == "c2", "captions"].isna().all() and len(new) == 3
