"""Tests of `curation/gemini.py`: the Gemini client for captions: requests, rate limit, retries,
budget, and a paid-reply cache. What is asked and what a valid reply is lives in
`curation.captions`."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from curation.config import AnnotateConfig
from curation.gemini import GeminiAnnotator
from manifests import read_table
from tests.support.annotation import SECRET, annotator, parts, run_job
from tests.support.fake_gemini import ACTOR1, FakeGemini, error, reply, shots_in, valid_reply

CACHE = "annotation_cache"

BROKEN = {
    "wrong number of shots": (lambda r: r | {"shots": r["shots"][:1]}, "there are 2 shots but 1"),
    "undefined actor": (lambda r: r | {"shots": [r["shots"][0], "Actor2 (a child) runs."]}, "Actor2, who is not in"),
    "description not repeated": (lambda r: r | {"shots": [r["shots"][0], "Actor1 (a man) sits."]}, "exact description"),
    "bare actor name": (lambda r: r | {"shots": [r["shots"][0], "Actor1 sits down."]}, "exact description"),
    "placeholder pronoun": (lambda r: r | {"shots": [r["shots"][0], "They walk away."]}, "uses ['they']"),
    "not english": (lambda r: r | {"shots": [r["shots"][0], "Человек идёт по улице под дождём."]}, "not in English"),
    "french": (
        lambda r: (
            r
            | {
                "shots": [
                    r["shots"][0],
                    f"Actor1 ({ACTOR1}) traverse la rue sous la pluie et regarde les vitrines des magasins.",
                ]
            }
        ),
        "not in English",
    ),  # fmt: skip
    "bad actor name": (lambda r: r | {"characters": [{"name": "John", "description": "x"}]}, "must be Actor1"),
    "not json": (lambda r: "Sure! Here are your captions.", "not JSON of the requested schema"),
}


def test_valid_reply_is_ok_with_captions_and_tokens():
    with FakeGemini() as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "ok" and result.error is None
    assert result.captions[0] == f"Actor1 ({ACTOR1}) walks to the corner, step 1." and len(result.captions) == 2
    assert result.characters == [{"name": "Actor1", "description": ACTOR1}] and result.background
    assert (result.requests, result.prompt_tokens, result.output_tokens) == (1, 100, 20)
    request = server.requests[0]
    assert request["path"].endswith(":generateContent") and request["headers"]["x-goog-api-key"] == SECRET
    assert request["body"]["generationConfig"]["responseMimeType"] == "application/json"
    assert "responseSchema" in request["body"]["generationConfig"]


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_validation_rule_is_reasked_then_invalid(case):
    breaker, message = BROKEN[case]
    with FakeGemini(lambda i, body: reply(breaker(valid_reply(2)))) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "invalid" and message in result.error
    assert len(server.requests) == 2 and result.requests == 2  # asked, then re-asked once
    followup = server.requests[1]["body"]["contents"]
    assert followup[-1]["role"] == "user" and "broke these rules" in followup[-1]["parts"][0]["text"]
    assert followup[-2]["role"] == "model"


def test_a_reask_that_fixes_the_reply_is_ok():
    script = lambda i, body: reply(valid_reply(1) if i == 0 else valid_reply(2))  # noqa: E731
    with FakeGemini(script) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "ok" and len(server.requests) == 2


def test_429_is_retried_after_the_server_given_delay():
    script = lambda i, body: error(429, "RESOURCE_EXHAUSTED", "0.4s") if i == 0 else reply(valid_reply(2))  # noqa: E731
    with FakeGemini(script) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "ok" and len(server.requests) == 2
    assert server.requests[1]["time"] - server.requests[0]["time"] >= 0.4  # honoured, though our backoff is 0.01 s


def test_500_then_success():
    script = lambda i, body: error(500, "INTERNAL") if i == 0 else reply(valid_reply(2))  # noqa: E731
    with FakeGemini(script) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "ok" and result.requests == 2


def test_persistent_server_errors_end_as_error_after_bounded_retries():
    with FakeGemini(lambda i, body: error(503, "UNAVAILABLE")) as server:
        result = annotator(server, max_retries=2).annotate(parts(2), 2)
    assert result.status == "error" and "503" in result.error and len(server.requests) == 3


def test_client_errors_are_not_retried():
    with FakeGemini(lambda i, body: error(400, "INVALID_ARGUMENT")) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "error" and "400" in result.error and len(server.requests) == 1


@pytest.mark.parametrize(
    "response",
    [
        (200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 5}}),
        reply("", finish="SAFETY"),
    ],
    ids=["prompt-blocked", "reply-blocked"],
)
def test_safety_blocks_are_recorded_as_blocked(response):
    with FakeGemini(lambda i, body: response) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "blocked" and result.error.endswith(": SAFETY") and len(server.requests) == 1


def test_truncated_reply_is_recorded_as_truncated():
    with FakeGemini(lambda i, body: reply('{"characters": [{"name": "Actor1", "desc', finish="MAX_TOKENS")) as server:
        result = annotator(server).annotate(parts(2), 2)
    assert result.status == "truncated" and len(server.requests) == 1


def test_slow_reply_past_the_timeout_is_retried_then_an_error():
    with FakeGemini(lambda i, body: (*reply(valid_reply(2)), 3.0)) as server:
        began = time.monotonic()
        result = annotator(server, timeout=0.5, max_retries=1).annotate(parts(2), 2)
    assert result.status == "error" and len(server.requests) == 2
    assert time.monotonic() - began < 2.5


def test_concurrency_and_rate_limits_hold_across_threads():
    with FakeGemini(lambda i, body: (*reply(valid_reply(1)), 0.2)) as server:
        gemini = annotator(server, concurrency=2, rpm=600)  # at most 2 in flight, one start per 0.1 s
        results = []
        threads = [threading.Thread(target=lambda: results.append(gemini.annotate(parts(1), 1))) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert [r.status for r in results] == ["ok"] * 8
    assert server.max_in_flight <= 2
    starts = sorted(r["time"] for r in server.requests)
    assert starts[-1] - starts[0] >= 0.65


def test_request_budget_leaves_the_rest_unannotated():
    with FakeGemini() as server:
        gemini = annotator(server, max_requests=1)
        first, second = gemini.annotate(parts(1), 1), gemini.annotate(parts(1), 1)
    assert first.status == "ok" and second.status == "unannotated" and "budget" in second.error
    assert len(server.requests) == 1


def test_a_budget_that_runs_out_during_a_reask_leaves_the_item_retryable():
    with FakeGemini(lambda i, body: reply(valid_reply(1))) as server:  # always the wrong count: re-asks
        result = annotator(server, max_requests=1, max_reasks=2).annotate(parts(2), 2)
    assert result.status == "unannotated" and not result.final and not result.paid
    assert "budget" in result.error and "re-ask 1 of 2" in result.error and result.requests == 1
    assert result.prompt_tokens == 100  # the request it did send is still counted


def test_max_reasks_is_a_setting():
    with FakeGemini(lambda i, body: reply(valid_reply(1))) as server:
        result = annotator(server, max_reasks=3).annotate(parts(2), 2)
    assert result.status == "invalid" and result.requests == len(server.requests) == 4


def test_cost_estimate_uses_the_price_table_or_the_override():
    from curation.gemini import estimated_cost

    assert estimated_cost("gemini-2.5-flash", 1_000_000, 1_000_000) == pytest.approx(0.30 + 2.50)
    assert estimated_cost("gemini-x", 1_000_000, 0) is None
    assert estimated_cost("gemini-x", 2_000_000, 1_000_000, (1.0, 4.0)) == pytest.approx(6.0)


@pytest.mark.slow
def test_one_budget_for_the_run_then_a_rerun_finishes(ray_local, tmp_path, multi_shot_video, monkeypatch):
    """--max-requests covers combinations and shots together; a budget that stops a re-ask leaves
    the item retryable; a re-run without a budget finishes it; totals equal what the server got."""
    out = tmp_path / "out"
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    state = {"combination_asked": 0}

    def script(i, body):
        shots = shots_in(body)
        if shots == 3:
            state["combination_asked"] += 1
            if state["combination_asked"] == 1:
                return (*reply(valid_reply(2), thoughts=5), 0.05)  # wrong count: a re-ask is needed
        return (*reply(valid_reply(shots), thoughts=5), 0.02 * (i % 3))

    with FakeGemini(script) as server:
        common = ["--gemini-base-url", server.url, "--gemini-concurrency", "3", "--gemini-backoff", "0.01"]
        assert run_job(out, multi_shot_video, *common, "--max-requests", "1") == 0
        assert len(server.requests) == 1  # one budget for the whole run, not one per table
        notes = read_table(out, "annotations")
        assert notes["status"].tolist() == ["unannotated"] and "budget" in notes["error"].iloc[0]
        assert notes["requests"].tolist() == [1]
        assert (read_table(out, "shot_captions")["status"] == "unannotated").all()
        total = json.loads((out / "run.json").read_text())["relevance"]["annotation"]["total"]
        assert total["requests"] == 1 and total["thinking_tokens"] == 5

        assert run_job(out, multi_shot_video, *common) == 0
        assert len(server.requests) == 1 + 1 + 3  # the combination asked again (now valid), three shots
        notes = read_table(out, "annotations")
        assert notes["status"].tolist() == ["ok"] and notes["requests"].tolist() == [1]
        record = json.loads((out / "run.json").read_text())["relevance"]["annotation"]
        assert record["total"]["requests"] == 4 == sum(record[t]["requests"] for t in ("combinations", "shots"))
        assert record["total"]["estimated_cost_usd"] > 0

        # Served from the cache: nothing spent this run; the earlier spend is reported as cached.
        assert run_job(out, multi_shot_video, *common) == 0
        assert len(server.requests) == 5
        total = json.loads((out / "run.json").read_text())["relevance"]["annotation"]["total"]
        assert (total["requests"], total["prompt_tokens"], total["thinking_tokens"]) == (0, 0, 0)
        assert total["cached_prompt_tokens"] == 4 * 100 and total["cache_hits"] == 4
        assert read_table(out, "annotations")["from_cache"].tolist() == [True]


def test_breaker_stops_when_every_request_fails_the_same_way(capsys):

    with socket.socket() as s:  # a port nothing listens on: no network
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    gemini = GeminiAnnotator(AnnotateConfig(base_url=dead, timeout=1.0, max_retries=5, backoff=0.01,
                                            max_backoff=0.02, rpm=60000.0, concurrency=2), SECRET)  # fmt: skip
    began = time.monotonic()
    results = [gemini.annotate(parts(1), 1) for _ in range(6)]
    assert time.monotonic() - began < 10
    assert gemini.requests_sent == 8  # the breaker's window, then nothing more
    assert all(r.status in ("unannotated", "error") for r in results) and not any(r.paid for r in results)
    assert results[-1].status == "unannotated" and "all failed the same way" in results[-1].error
    assert "stopped sending" in capsys.readouterr().err  # on the console, without -v


def test_a_huge_invalid_reply_is_not_echoed_back_in_every_reask():
    from tests.support.annotation import annotator, parts
    from tests.support.fake_gemini import FakeGemini, reply

    huge = "not json " * 600_000  # 5.4 MB of garbage
    with FakeGemini(lambda i, body: reply(huge)) as server:
        result = annotator(server, max_reasks=2).annotate(parts(2), 2)
    assert result.status == "invalid" and len(server.requests) == 3
    sizes = [len(str(r["body"])) for r in server.requests]
    assert max(sizes) < sizes[0] + 20_000, sizes  # each re-ask adds a bounded excerpt, not the reply
    assert "characters cut" in str(server.requests[1]["body"]["contents"])
    assert len(result.error) < 10_000


@pytest.mark.parametrize("poison", [
    {"captions": 5},  # the wrong type
    {"captions": ["Actor1 (a man) walks."]},  # the wrong number of shots for its combination
    {"status": "done"},  # not a status
    {"status": "error"},  # never cached: not a final reply
], ids=["type", "count", "status", "not-final"])  # fmt: skip
def test_a_poisoned_cache_entry_is_asked_again_and_the_tables_stay_readable(
    ray_local, tmp_path, multi_shot_video, monkeypatch, poison
):
    out = tmp_path / "out"
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    with FakeGemini(lambda i, body: reply(valid_reply(shots_in(body)))) as server:
        common = ["--gemini-base-url", server.url]
        assert run_job(out, multi_shot_video, *common) == 0
        asked = len(server.requests)
        entries = sorted((out / CACHE).glob("*.json"))
        combination = next(p for p in entries if len(json.loads(p.read_text())["captions"]) == 3)
        combination.write_text(json.dumps(json.loads(combination.read_text()) | poison))
        assert run_job(out, multi_shot_video, *common) == 0
        assert len(server.requests) == asked + 1  # the poisoned entry only, asked again
    notes = read_table(out, "annotations")
    assert notes["status"].tolist() == ["ok"] and not notes["from_cache"].iloc[0]
    assert (read_table(out, "shot_captions")["status"] == "ok").all()


def test_a_reply_far_larger_than_any_caption_reply_is_not_parsed():
    from curation.gemini import MAX_REPLY_CHARS

    huge = valid_reply(2) | {"background": "a grey room " * (MAX_REPLY_CHARS // 10)}  # valid JSON, 1.2 MB
    with FakeGemini(lambda i, body: reply(huge)) as server:
        result = annotator(server, max_reasks=1).annotate(parts(2), 2)
    assert result.status == "invalid" and "so it was not parsed" in result.error and len(result.error) < 1000
    assert len(server.requests) == 2 and len(str(server.requests[1]["body"])) < MAX_REPLY_CHARS // 10


def test_a_stopped_run_never_waits_out_the_rate_limit():
    from curation.gemini import RateLimiter, Stopped

    stop = threading.Event()
    limiter = RateLimiter(rpm=0.01, concurrency=1, stopped=stop.is_set)  # one request per 100 minutes
    with limiter:
        pass
    threading.Timer(0.3, stop.set).start()
    began = time.monotonic()
    with pytest.raises(Stopped):
        with limiter:
            pass
    assert time.monotonic() - began < 30  # stopped within its 0.1 s polling, not after 100 minutes


def test_caption_rules_read_each_mention_without_copying_the_rest_of_the_reply():
    from curation.captions import CaptionReply, validate_reply

    description = "a tall man in a grey coat"
    shot = " ".join([f"Actor1 ({description}) waits."] * 20_000)  # about 700 KB, 20,000 mentions
    reply = CaptionReply(characters=[{"name": "Actor1", "description": description}], background="A room.",
                         shots=[shot, shot.replace(f"({description})", "(someone)", 1)])  # fmt: skip
    problems = validate_reply(reply, 2)
    assert problems == [f"shot 2: Actor1 must be followed by its exact description in parentheses: "
                        f"'Actor1 ({description})'"]  # fmt: skip
