"""The Gemini client for captions: requests, rate limit, retries, budget, and a paid-reply cache.
What is asked and what a valid reply is lives in `curation.captions`.

Uses the maintained `google-genai` SDK. The API key is read from GEMINI_API_KEY or GOOGLE_API_KEY
by `api_key_from_env` and handed straight to the client: it is never logged, never put in an
error message, a cache entry, a table or run.json.

One request per combination: its shots in order (JPEG frames or short low-resolution MP4 excerpts)
and the caption prompt; every reply is validated by `curation.captions.validate_reply`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field

from curation.captions import (
    PROMPT_VERSION,
    REASK_EXCERPT,
    SYSTEM_PROMPT,
    CaptionReply,
    excerpt,
    validate_reply,
)
from curation.config import AnnotateConfig
from manifests.io import write_json_atomic
from manifests.schema import Status
from manifests.store import location

log = logging.getLogger("curation")

BREAKER_WINDOW = 8  # this many requests in a row failing the same way stop the run's requests

BLOCK_REASONS = {"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY", "OTHER"}


PRICES_PER_MILLION = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
}


def estimated_cost(model: str, prompt_tokens: int, output_tokens: int, price: tuple[float, float] | None = None):
    """Estimated USD for the tokens, or None when the model has no known price and none was given."""
    price = price or PRICES_PER_MILLION.get(model.removeprefix("models/"))
    if price is None:
        return None
    return (prompt_tokens * price[0] + output_tokens * price[1]) / 1e6


KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


def api_key_from_env() -> str | None:
    return os.environ.get("GEMINI_API_KEY") or os.environ.get("GOOGLE_API_KEY") or None


@contextlib.contextmanager
def api_key_held_apart():
    """The key, taken out of this process's environment while the job runs, so that no process it
    starts (Ray's raylet and workers, which decode untrusted videos, inherit the driver's environment)
    ever sees it; only the process that sends requests holds it, in memory. Put back afterwards, so
    a caller that runs the job twice in one process still has it."""
    saved = {name: os.environ.pop(name) for name in KEY_VARIABLES if name in os.environ}
    try:
        yield saved.get("GEMINI_API_KEY") or saved.get("GOOGLE_API_KEY") or None
    finally:
        os.environ.update(saved)


REPLIED = (Status.OK, Status.INVALID, Status.BLOCKED, Status.TRUNCATED)  # the model answered: final, paid, cached


@dataclass
class Annotation:
    status: str  # ok | invalid | blocked | truncated | error | unannotated | failed (its media could not be cut)
    captions: list[str] = field(default_factory=list)
    characters: list[dict] = field(default_factory=list)
    background: str | None = None
    error: str | None = None
    requests: int = 0  # HTTP requests this item sent (every retry and re-ask counts)
    prompt_tokens: int = 0
    output_tokens: int = 0  # reply tokens, thinking excluded
    thinking_tokens: int = 0  # Gemini 2.5 "thoughts": billed as output
    from_cache: bool = False  # served from the cache: paid in an earlier run, costs nothing now
    final: bool = True  # False: stopped by the request budget; never cached, asked again on a re-run
    error_stage: str | None = None  # the stage that failed: "media" (cutting frames/MP4), "request", "caption"
    seconds: float = 0.0  # time the captioner spent on it (requests, or a local model's share of its batches)

    @classmethod
    def media_failed(cls, failure) -> Annotation:
        """The row of an item whose shots' media could not be cut (unreadable frames, or the task's
        worker died): a `curation.stage.Failure`."""
        return cls(status=Status.FAILED, error=f"cannot cut the shots' media: {failure.error}",
                   error_stage=failure.stage)  # fmt: skip

    @property
    def paid(self) -> bool:
        """Final for this (combination, model, prompt): cached so a re-run never pays for it again."""
        return self.final and self.status in REPLIED


MAX_REPLY_CHARS = 1 << 20  # a few shots' captions are kilobytes; max_output_tokens keeps honest replies far below


def sleep_unless(until: float, stopped) -> bool:
    """Sleep until time.monotonic() reaches `until`, in slices of 0.1 s; True as soon as `stopped()` is
    (every wait of a run stays interruptible: Ctrl-C or the breaker never waits out a backoff or a rate)."""
    while time.monotonic() < until:
        if stopped():
            return True
        time.sleep(min(0.1, max(0.0, until - time.monotonic())))
    return bool(stopped())


class RateLimiter:
    """At most `rpm` request starts per minute and `concurrency` in flight, shared by threads."""

    def __init__(self, rpm: float, concurrency: int, stopped=lambda: False):
        self.interval = 60.0 / rpm if rpm > 0 else 0.0
        self.slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._next = 0.0
        self.stopped = stopped  # checked every 0.1 s while waiting: a stopped run never waits out a slow rate

    def __enter__(self):
        while not self.slots.acquire(timeout=0.1):
            if self.stopped():
                raise Stopped("stopped while waiting for a request slot")
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if sleep_unless(start, self.stopped):
            self.slots.release()
            raise Stopped("stopped while waiting for the rate limit")
        return self

    def __exit__(self, *exc):
        self.slots.release()


class BudgetExhausted(RuntimeError):
    pass


class Stopped(RuntimeError):
    """No more requests: the run was interrupted, or the circuit breaker opened."""


def _enum_name(value) -> str:
    """'SAFETY' for BlockedReason.SAFETY, FinishReason.SAFETY or the plain string: one form everywhere."""
    return str(getattr(value, "name", None) or value or "").rsplit(".", 1)[-1]


def _retry_delay(error) -> float | None:
    """The server's RetryInfo delay ('12s'), if the error carries one."""
    details = getattr(error, "details", None) or {}
    entries = details.get("error", {}).get("details", []) if isinstance(details, dict) else []
    for entry in entries:
        if isinstance(entry, dict) and str(entry.get("@type", "")).endswith("RetryInfo"):
            try:
                return float(str(entry.get("retryDelay", "")).rstrip("s"))
            except ValueError:
                return None
    return None


class GeminiAnnotator:
    """Sends requests with retries, re-asks, a rate limit and a request budget. Thread-safe."""

    def __init__(self, settings: AnnotateConfig, api_key: str):
        from google import genai
        from google.genai import types

        self.settings = settings
        self.types = types
        http = types.HttpOptions(
            base_url=settings.base_url, timeout=int(settings.timeout * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),  # retries are ours: they honour RetryInfo
        )  # fmt: skip
        self.client = genai.Client(api_key=api_key, http_options=http)
        self._scrub = lambda text: text.replace(api_key, "***") if api_key else text
        self.limiter = RateLimiter(settings.rpm, settings.concurrency, stopped=self._stopped)
        self._count_lock = threading.Lock()
        self.requests_sent = 0
        self.stop_reason: str | None = None  # set by stop() or the breaker: nothing more is sent
        self._recent: deque[str | None] = deque(maxlen=BREAKER_WINDOW)  # last outcomes: None = success

    def stop(self, reason: str) -> None:
        """Send nothing more (requests already in flight finish or time out)."""
        with self._count_lock:
            self.stop_reason = self.stop_reason or reason

    def _record(self, failure: str | None) -> None:
        """Track outcomes; open the breaker when the last BREAKER_WINDOW requests all failed alike."""
        with self._count_lock:
            self._recent.append(failure)
            window = list(self._recent)
            if self.stop_reason or len(window) < BREAKER_WINDOW or window[0] is None or len(set(window)) != 1:
                return
            self.stop_reason = (f"the last {BREAKER_WINDOW} requests all failed the same way ({window[0]}); "
                                "stopped sending. Check the network, the endpoint and the key, then re-run")  # fmt: skip
        print(f"gemini: {self.stop_reason}", file=sys.stderr, flush=True)

    def _take_budget(self, item: Annotation) -> None:
        with self._count_lock:
            if self.stop_reason:
                raise Stopped(self.stop_reason)
            if self.settings.max_requests is not None and self.requests_sent >= self.settings.max_requests:
                raise BudgetExhausted(f"request budget (--max-requests {self.settings.max_requests}) used up")
            self.requests_sent += 1
        item.requests += 1  # each item counts its own requests: exact under any concurrency

    def _request(self, contents, num_shots: int, item: Annotation):
        from google.genai import errors

        config = self.types.GenerateContentConfig(
            system_instruction=SYSTEM_PROMPT.format(n=num_shots), response_mime_type="application/json",
            response_schema=CaptionReply, temperature=self.settings.temperature,
            max_output_tokens=self.settings.max_output_tokens,
        )  # fmt: skip
        attempt = 0
        while True:
            self._take_budget(item)
            try:
                with self.limiter:
                    response = self.client.models.generate_content(
                        model=self.settings.model, contents=contents, config=config
                    )
                self._record(None)
                return response
            except errors.APIError as err:
                retryable = err.code == 429 or (err.code or 0) >= 500
                reason = f"HTTP {err.code} {err.status or ''}: {err.message or ''}".strip()
                server_delay = _retry_delay(err)
                self._record(f"HTTP {err.code}")
            except Exception as err:  # the HTTP client's timeouts and connection failures, or anything else
                name = type(err).__name__.lower()
                retryable = "timeout" in name or "connect" in name or isinstance(err, OSError)
                reason, server_delay = f"request failed: {type(err).__name__}: {err}", None
                self._record(type(err).__name__)
            reason = self._scrub(reason)
            if self.stop_reason:
                raise Stopped(self.stop_reason)
            if not retryable or attempt >= self.settings.max_retries:
                raise RuntimeError(reason + (f" (after {attempt + 1} attempts)" if retryable else ""))
            backoff = min(self.settings.max_backoff, self.settings.backoff * 2**attempt) * (1 + 0.25 * random.random())
            delay = max(server_delay, backoff) if server_delay is not None else backoff
            log.info("gemini: %s; retrying in %.1f s", reason, delay)
            if sleep_unless(time.monotonic() + delay, self._stopped):
                raise Stopped(self.stop_reason)
            attempt += 1

    def _stopped(self) -> bool:
        return bool(self.stop_reason)

    def annotate(self, parts: list, num_shots: int) -> Annotation:
        """One combination: parts are the prompt's media and labels, shots in order."""
        began = time.perf_counter()
        result = self._annotate(parts, num_shots)
        result.seconds = time.perf_counter() - began
        return result

    def _annotate(self, parts: list, num_shots: int) -> Annotation:
        types = self.types
        contents = [types.Content(role="user", parts=parts)]
        result = Annotation(status=Status.ERROR)
        for ask in range(self.settings.max_reasks + 1):
            try:
                response = self._request(contents, num_shots, result)
            except Stopped as err:
                result.status, result.error, result.final = Status.UNANNOTATED, f"not finished: {err}", False
                return result
            except BudgetExhausted as err:
                if ask == 0:
                    result.status, result.error = Status.UNANNOTATED, f"{err}; re-run to annotate it"
                else:  # what was paid so far stays counted; the item is asked again next run
                    result.status = Status.UNANNOTATED
                    result.error = (f"{err} during re-ask {ask} of {self.settings.max_reasks} (last reply: "
                                    f"{result.error}); not cached, a re-run asks again")  # fmt: skip
                result.final = False
                return result
            except RuntimeError as err:
                result.status, result.error = Status.ERROR, str(err)
                return result
            usage = response.usage_metadata
            if usage:
                result.prompt_tokens += usage.prompt_token_count or 0
                result.output_tokens += usage.candidates_token_count or 0
                result.thinking_tokens += usage.thoughts_token_count or 0
            feedback = response.prompt_feedback
            if feedback is not None and feedback.block_reason:
                result.status, result.error = Status.BLOCKED, f"prompt blocked: {_enum_name(feedback.block_reason)}"
                return result
            if not response.candidates:
                result.status, result.error = Status.ERROR, "reply has no candidates"
                return result
            finish = _enum_name(response.candidates[0].finish_reason)
            if finish in BLOCK_REASONS:
                result.status, result.error = Status.BLOCKED, f"reply blocked: {finish}"
                return result
            if finish == "MAX_TOKENS":
                result.status, result.error = (
                    Status.TRUNCATED,
                    f"reply cut at max_output_tokens ({self.settings.max_output_tokens})",
                )
                return result
            text = response.text or ""
            try:
                if len(text) > MAX_REPLY_CHARS:  # far past any caption reply: never parsed or checked
                    raise ValueError(f"the reply is {len(text):,} characters, over the {MAX_REPLY_CHARS:,} a caption "
                                     "reply can be, so it was not parsed")  # fmt: skip
                reply = CaptionReply.model_validate_json(text)
                problems = validate_reply(reply, num_shots)
            except ValueError as err:
                reply, problems = None, [f"the reply is not JSON of the requested schema ({str(err).splitlines()[0]})"]
            if not problems:
                result.status, result.error = Status.OK, None
                result.captions, result.background = list(reply.shots), reply.background.strip()
                result.characters = [c.model_dump() for c in reply.characters]
                return result
            reasons = excerpt("; ".join(problems), REASK_EXCERPT)
            result.status, result.error = Status.INVALID, reasons
            # The re-ask quotes only the latest reply, cut to a bounded excerpt: a huge invalid reply
            # (a broken or hostile endpoint) must not grow every following request.
            contents = contents[:1] + [
                types.Content(role="model", parts=[types.Part.from_text(text=excerpt(text, REASK_EXCERPT))]),
                types.Content(role="user", parts=[types.Part.from_text(
                    text="Your reply broke these rules: " + reasons + ". Answer again, fixing them.")]),
            ]  # fmt: skip
        return result


def cached_reply_problem(annotation: Annotation, num_shots: int | None) -> str | None:
    """Why a cache entry cannot be served (None: it can): only final replies are cached, with fields of
    their types; an ok one must pass the caption rules again, as a reply from the network would."""
    if annotation.status not in REPLIED:
        return f"status {annotation.status!r} is not a final reply's"
    texts = [annotation.background, annotation.error]
    if not all(t is None or isinstance(t, str) for t in texts) or not isinstance(annotation.captions, list):
        return "fields of the wrong type"
    counts = (annotation.prompt_tokens, annotation.output_tokens, annotation.thinking_tokens, annotation.requests)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        return "token counts that are not counts"
    if annotation.status != Status.OK:
        return None
    try:
        reply = CaptionReply(characters=annotation.characters, background=annotation.background or "",
                             shots=annotation.captions)  # fmt: skip
    except ValueError as err:
        return f"not a caption reply ({err})"
    problems = validate_reply(reply, len(reply.shots) if num_shots is None else num_shots)
    return "; ".join(problems) or None


class ReplyCache:
    """Final replies on disk (or in the output's object store), keyed by (item, captioner, prompt
    version, media): re-runs don't pay twice. The captioner is the Gemini model's name, or a local
    model folder's name and digest; the media says how the shots were shown."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = location(folder)

    @staticmethod
    def key(item_id: str, captioner: str, media: str) -> str:
        raw = "|".join([item_id, captioner, PROMPT_VERSION, media])
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()

    def get(self, key: str, num_shots: int | None = None) -> Annotation | None:
        """The cached final reply, checked like a fresh one (its shape, its status, and for an ok one the
        caption rules for `num_shots` shots); a damaged or poisoned entry is None: asked again."""
        try:
            text = (self.folder / f"{key}.json").read_text()
        except (FileNotFoundError, IsADirectoryError):
            return None
        try:
            annotation = Annotation(**json.loads(text))
        except (ValueError, TypeError):
            return None
        return annotation if cached_reply_problem(annotation, num_shots) is None else None

    def put(self, key: str, annotation: Annotation) -> None:
        write_json_atomic(self.folder / f"{key}.json", asdict(annotation))
