"""Annotation stage: Gemini captions for every combination (and, with --caption-shots, every shot).

Work is split by what it costs. Cutting each shot's media (JPEG frames or a short low-resolution
MP4) is CPU work and runs as Ray tasks across the cluster. Requests are I/O and money: they all
leave from the driver through one thread pool and one rate limiter (--gemini-rpm, concurrency),
which makes the limit cluster-wide and keeps the API key inside the driver process. Every paid
reply is cached on disk as soon as it arrives, so a killed or repeated run never pays twice.
Without a key nothing is sent: rows are `unannotated` and the run says how to enable it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from curation.config import AnnotateConfig
from curation.driver import Driver
from curation.gemini import (
    PRICES_PER_MILLION,
    PROMPT_VERSION,
    Annotation,
    GeminiAnnotator,
    ReplyCache,
    api_key_from_env,
    estimated_cost,
)
from curation.progress import StageProgress
from curation.stage import Failure, Remote, Stage
from manifests.frames import read_shot_frames
from manifests.io import read_table, write_part
from manifests.media import encode_jpeg, encode_mp4
from manifests.sampling import sample_indices
from manifests.schema import AnnotationRecord, Record, ShotCaptionRecord, Status

log = logging.getLogger("curation")

ENABLE_HINT = "set GEMINI_API_KEY (or GOOGLE_API_KEY) and re-run the same command to annotate; nothing was sent"


def shot_media(shot: dict, settings: AnnotateConfig) -> list[tuple[bytes, str]]:
    """One shot as (bytes, mime type) parts: JPEG frames, or one short H.264 excerpt without audio."""
    num_frames = int(shot["num_frames"])
    if settings.input == "frames":
        frames = read_shot_frames(shot, indices=sample_indices(num_frames, settings.frames_per_shot),
                                  max_side=settings.max_side, crop=settings.crop_bars)  # fmt: skip
        return [(encode_jpeg(f), "image/jpeg") for f in frames]
    return [(encode_mp4(shot_video(shot, settings), settings.video_fps, crf=28, preset="veryfast"), "video/mp4")]


def shot_video(shot: dict, settings: AnnotateConfig):
    """The shot's frames at --gemini-video-fps (at most --gemini-video-max-seconds of them), long side
    --gemini-max-side, black bars cropped: Gemini's video input, and what a local captioner sees."""
    import numpy as np

    num_frames, fps = int(shot["num_frames"]), float(shot["fps"])
    count = max(
        1, min(round(num_frames / fps * settings.video_fps), round(settings.video_max_seconds * settings.video_fps))
    )
    return np.stack(read_shot_frames(shot, indices=sample_indices(num_frames, count), max_side=settings.max_side,
                                     crop=settings.crop_bars))  # fmt: skip


class MediaRemote(Remote):
    """Cuts an item's media in Ray tasks (CPU work, no key): per shot, JPEG frames or a short MP4 for
    Gemini, the frames themselves for a local captioner."""

    name = "media"

    def __init__(self, settings: AnnotateConfig):
        self.settings = settings

    def process(self, shots: list[dict]) -> list:
        if self.settings.captioner == "local":
            return [shot_video(shot, self.settings) for shot in shots]
        return [shot_media(shot, self.settings) for shot in shots]


def request_parts(shots: list[dict], media: list[list[tuple[bytes, str]]]) -> list:
    from google.genai import types

    parts = []
    for index, (shot, shot_parts) in enumerate(zip(shots, media), start=1):
        parts.append(types.Part.from_text(text=f"Shot {index} of {len(shots)} ({float(shot['duration_s']):.1f} s):"))
        parts += [types.Part.from_bytes(data=data, mime_type=mime) for data, mime in shot_parts]
    return parts


@dataclass
class AnnotateSummary:
    """One table's annotation numbers. Requests and tokens are what this run sent and was billed;
    replies served from the cache are counted apart (`cached_*`): they were paid in an earlier run."""

    key_present: bool = False
    items: int = 0
    cache_hits: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    thinking_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_output_tokens: int = 0
    estimated_cost_usd: float | None = None
    statuses: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None
    interrupted: bool = False
    captioner: str = "gemini"
    captioned: int = 0  # items this run's captioner answered (cache hits and unannotated ones excluded)
    caption_seconds: float = 0.0  # the captioner's own time on them (requests, or generation)

    def add(self, item_id: str, annotation: Annotation) -> None:
        self.statuses[annotation.status] += 1
        if annotation.requests and not annotation.from_cache:
            self.captioned += 1
            self.caption_seconds += annotation.seconds
        if annotation.from_cache:
            self.cached_prompt_tokens += annotation.prompt_tokens
            self.cached_output_tokens += annotation.output_tokens + annotation.thinking_tokens
        else:
            self.requests += annotation.requests
            self.prompt_tokens += annotation.prompt_tokens
            self.output_tokens += annotation.output_tokens
            self.thinking_tokens += annotation.thinking_tokens
        if annotation.status not in (Status.OK, Status.UNANNOTATED) or not annotation.final:
            self.failures.append(f"{item_id}: {annotation.status}: {annotation.error}")

    def as_dict(self) -> dict:
        return {
            "key_present": self.key_present, "items": self.items, "cache_hits": self.cache_hits,
            "requests": self.requests, "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
            "thinking_tokens": self.thinking_tokens, "cached_prompt_tokens": self.cached_prompt_tokens,
            "cached_output_tokens": self.cached_output_tokens, "estimated_cost_usd": self.estimated_cost_usd,
            "statuses": dict(self.statuses), "failures": self.failures[:20], "seconds": self.seconds, "note": self.note,
            "captioner": self.captioner, "captioned": self.captioned, "caption_seconds": self.caption_seconds,
            "captions_per_s": self.captioned / self.seconds if self.seconds else None,
            "output_tokens_per_s": self.output_tokens / self.seconds if self.seconds else None,
        }  # fmt: skip


class Annotate(Stage):
    """Captions for the whole manifest once combinations are mined: each item's media is cut by the
    remote part (`MediaRemote`), then its request is sent from the driver (`annotate_items`), or, with
    --captioner local, its batch goes to the caption actors (`curation.local_captioner`)."""

    name = "annotate"
    about = "captions per combination (media cut in Ray tasks; Gemini requests rate-limited from the driver, or a local VLM in Ray actors)"

    def __init__(self, settings: AnnotateConfig, output, api_key: str | None = None, media: Remote | None = None,
                 caption: Remote | None = None):  # fmt: skip
        from curation.local_captioner import LocalCaptionRemote, caption_stage_resources, media_key

        self.settings, self.output = settings, output
        self.remote = media or MediaRemote(settings)
        self.cache = ReplyCache(output / "annotation_cache")
        self.local = settings.captioner == "local"
        # One Gemini annotator serves the run: one budget for every table. A local captioner needs no key.
        self.annotator = GeminiAnnotator(settings, api_key) if api_key and not self.local else None
        # The local caption actors: registered with the driver, started only when an item is not cached
        # (a resumed run whose replies are all cached never loads the model).
        self.caption, self.caption_actors = None, None
        if self.local:
            self.caption = caption or LocalCaptionRemote(settings)
            self.caption.resources, self.caption_actors = caption_stage_resources(settings)
        self.media_id = media_key(settings) if self.local else settings.input  # how the shots are shown
        self._captioner_id = None
        self.report: dict = {}

    def remotes(self) -> list[tuple[Remote, int | None]]:
        return super().remotes() + ([(self.caption, self.caption_actors)] if self.caption is not None else [])

    @property
    def captioner_id(self) -> str:
        """Who writes the captions, as the cache key and the `model` column name it: the Gemini model,
        or the local folder's name and content digest (read once, when first needed)."""
        if self._captioner_id is None:
            from curation.local_captioner import model_identity

            self._captioner_id = model_identity(self.settings, self.cache.folder) if self.local else self.settings.model
        return self._captioner_id

    def finish(self, driver: Driver) -> None:
        self.report = annotate_manifest(self, driver)


def annotate_items(
    items: list[tuple[str, list[dict]]], stage: Annotate, driver: Driver
) -> tuple[dict[str, Annotation], AnnotateSummary]:
    """Annotate (item_id, shots) pairs; cached replies are reused, the rest are asked through the
    stage's annotator (None: no key, nothing is sent). One annotator serves a whole run: one budget."""
    began = time.perf_counter()
    settings, cache, annotator = stage.settings, stage.cache, stage.annotator
    summary = AnnotateSummary(items=len(items), key_present=annotator is not None, captioner=settings.captioner)
    results: dict[str, Annotation] = {}
    todo = []
    for item_id, shots in items:
        cached = cache.get(ReplyCache.key(item_id, stage.captioner_id, stage.media_id), num_shots=len(shots))
        if cached is not None:
            results[item_id] = replace(cached, requests=0, from_cache=True)  # paid in an earlier run
            summary.cache_hits += 1
        else:
            todo.append((item_id, shots))
    if todo and stage.local:
        from curation.local_captioner import ask_locally

        summary.interrupted = ask_locally(todo, stage, driver, results)
    elif todo and annotator is None:
        for item_id, _ in todo:
            results[item_id] = Annotation(status=Status.UNANNOTATED, error=ENABLE_HINT)
        summary.note = f"{len(todo)} items unannotated: {ENABLE_HINT}"
    elif todo:
        summary.interrupted = _ask_all(todo, stage, driver, results)
    for item_id, annotation in results.items():
        summary.add(item_id, annotation)
    summary.estimated_cost_usd = (
        None
        if stage.local
        else estimated_cost(
            settings.model, summary.prompt_tokens, summary.output_tokens + summary.thinking_tokens, settings.price
        )
    )
    summary.seconds = time.perf_counter() - began
    return results, summary


def _ask_all(todo: list[tuple[str, list[dict]]], stage: Annotate, driver: Driver, results: dict) -> bool:
    """Media cut in Ray tasks, requests from a thread pool here; returns whether it was interrupted."""
    settings, cache, annotator = stage.settings, stage.cache, stage.annotator

    def ask(item_id: str, parts: list, num_shots: int) -> Annotation:
        try:
            annotation = annotator.annotate(parts, num_shots)
        except Exception as err:  # a malformed reply must not stop the run
            return Annotation(status=Status.ERROR, error=f"{type(err).__name__}: {err}", error_stage="request")
        if annotation.paid:  # on disk the moment it arrives: a killed run loses nothing it paid for
            cache.put(ReplyCache.key(item_id, stage.captioner_id, stage.media_id), annotation)
        return annotation

    pool = ThreadPoolExecutor(max_workers=settings.concurrency)
    futures = {}

    def prepared(item_id: str, shots: list[dict]):
        def done(result) -> None:
            if isinstance(result, Failure):  # unreadable frames, or the task's worker died
                results[item_id] = Annotation.media_failed(result)
            else:
                futures[pool.submit(ask, item_id, request_parts(shots, result), len(shots))] = item_id

        return done

    try:
        for item_id, shots in todo:
            driver.work(stage, shots, prepared(item_id, shots))
        driver.drain()
        progress = StageProgress("annotate", len(futures), "items")
        for future, item_id in futures.items():
            results[item_id] = future.result()
            progress.step()
        return False
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: send nothing more, keep what is done
        annotator.stop("the run was interrupted")
        driver.executor.cancel()
        for future, item_id in futures.items():
            if future.done() and not future.cancelled():
                results[item_id] = future.result()
        for item_id, _ in todo:
            results.setdefault(item_id, Annotation(status=Status.UNANNOTATED, final=False,
                                                   error="the run was interrupted; re-run to annotate it"))  # fmt: skip
        return True
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # queued requests are dropped, not sent


def _common(annotation: Annotation, stage: Annotate) -> dict:
    return {
        "characters": annotation.characters, "background": annotation.background, "model": stage.captioner_id,
        "prompt_version": PROMPT_VERSION, "seconds": annotation.seconds,
        "input_mode": "video" if stage.local else stage.settings.input, "status": annotation.status, "error": annotation.error,
        "error_stage": annotation.error_stage,
        "requests": annotation.requests, "prompt_tokens": annotation.prompt_tokens, "output_tokens": annotation.output_tokens,
        "thinking_tokens": annotation.thinking_tokens, "from_cache": annotation.from_cache,
    }  # fmt: skip


def run_annotation(output, settings: AnnotateConfig, media: Remote | None = None, api_key: str | None = None) -> dict:
    """The annotate stage alone, on an output curated before (annotations.parquet and, with
    settings.caption_shots, shot_captions.parquet). api_key: the Gemini key; default: from the
    environment (the job takes it out of the environment before Ray starts)."""
    import ray

    stage = Annotate(settings, output, api_key or api_key_from_env(), media)
    Driver([stage], max_in_flight=2 * max(1, int(ray.cluster_resources().get("CPU", 1)))).run([])
    return stage.report


def annotate_manifest(stage: Annotate, driver: Driver) -> dict:
    """Annotate ok combinations and, with settings.caption_shots, single ok shots."""
    output, settings = stage.output, stage.settings
    shots = driver.table("shots", output)
    by_id = {row["shot_id"]: row for row in shots.to_dict("records")}
    combos = read_table(output, "combinations", missing_ok=True)
    combos = combos[combos["status"] == Status.OK]
    # A combination whose shots are gone (its video's shots part deleted, say) cannot be cut into
    # media: it becomes a failed row naming the shot, and the others go on.
    dangling = {row.combination_id: next(s for s in row.shot_ids if s not in by_id) for row in combos.itertuples()
                if any(s not in by_id for s in row.shot_ids)}  # fmt: skip
    items = [(row.combination_id, [by_id[s] for s in row.shot_ids]) for row in combos.itertuples()
             if row.combination_id not in dangling]  # fmt: skip
    results, summary = annotate_items(items, stage, driver)
    for combination_id, shot_id in dangling.items():
        results[combination_id] = Annotation(
            Status.FAILED, error=f"shot {shot_id} is not in shots.parquet (its video's shots are gone); re-run curation "
            "on that video to rebuild its shots and combinations", error_stage="media",
        )  # fmt: skip
        summary.add(combination_id, results[combination_id])
    rows = [
        AnnotationRecord(combination_id=row.combination_id, video_id=row.video_id, shot_ids=list(row.shot_ids),
                         captions=results[row.combination_id].captions, **_common(results[row.combination_id], stage))
        for row in combos.itertuples()
    ]  # fmt: skip
    write_by_video(output, "annotations", rows)
    if summary.interrupted:
        raise KeyboardInterrupt  # what is done is written; the job says how to resume
    report = {"combinations": summary.as_dict()}
    if settings.caption_shots:
        singles = shots[shots["status"] == Status.OK]
        items = [(f"shot:{row['shot_id']}", [row]) for row in singles.to_dict("records")]
        results, shot_summary = annotate_items(items, stage, driver)
        rows = [
            ShotCaptionRecord(shot_id=row["shot_id"], video_id=row["video_id"],
                              caption=(results[f"shot:{row['shot_id']}"].captions or [None])[0],
                              **_common(results[f"shot:{row['shot_id']}"], stage))
            for row in singles.to_dict("records")
        ]  # fmt: skip
        write_by_video(output, "shot_captions", rows)
        if shot_summary.interrupted:
            raise KeyboardInterrupt
        report["shots"] = shot_summary.as_dict()
    report["total"] = run_totals(list(report.values()), settings)
    return report


def run_totals(tables: list[dict], settings: AnnotateConfig) -> dict:
    """The run's spend over every annotated table: what the server received and billed this run."""
    keys = ("requests", "prompt_tokens", "output_tokens", "thinking_tokens", "cached_prompt_tokens",
            "cached_output_tokens", "cache_hits", "items", "captioned", "caption_seconds", "seconds")  # fmt: skip
    total = {key: sum(t[key] for t in tables) for key in keys}
    total["captioner"] = settings.captioner
    # The throughput cosmos-curate optimises: captions and output tokens per second of the stage's wall time.
    total["captions_per_s"] = total["captioned"] / total["seconds"] if total["seconds"] else None
    total["output_tokens_per_s"] = total["output_tokens"] / total["seconds"] if total["seconds"] else None
    total["estimated_cost_usd"] = (
        None
        if settings.captioner == "local"
        else estimated_cost(
            settings.model, total["prompt_tokens"], total["output_tokens"] + total["thinking_tokens"], settings.price
        )
    )
    total["price_per_million_tokens"] = (
        None if settings.captioner == "local" else (settings.price or PRICES_PER_MILLION.get(settings.model))
    )
    total["max_requests"] = settings.max_requests
    return total


def write_by_video(output, table: str, rows: list[Record]) -> None:
    by_video: dict[str, list[Record]] = {}
    for row in rows:
        by_video.setdefault(row.video_id, []).append(row)
    for video_id in sorted(by_video):
        write_part(output, table, video_id, by_video[video_id])


def spend_lines(report: dict) -> str:
    """The annotation report in a few lines for the end of a run: statuses, requests, tokens, cache hits, spend."""
    lines = []
    for what, r in report.items():
        if what == "total":
            continue
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(r["statuses"].items())) or "nothing to annotate"
        tokens = r["prompt_tokens"] + r["output_tokens"] + r["thinking_tokens"]
        lines.append(f"annotation ({what}): {statuses}; {r['requests']} requests and {tokens} tokens this run "
                     f"({r['thinking_tokens']} thinking), {r['cache_hits']} from cache")  # fmt: skip
        if r["note"]:
            lines.append(f"  {r['note']}")
    total = report.get("total")
    if total and total.get("captioned"):
        lines.append(f"{total['captioner']} captioner: {total['captioned']} items in {total['seconds']:.1f} s, "
                     f"{total['captions_per_s']:.3f} captions/s, {total['output_tokens_per_s']:.1f} output tokens/s")  # fmt: skip
    if total and total["requests"] and total.get("captioner") != "local":
        cost = total["estimated_cost_usd"]
        lines.append(f"annotation spend this run: {total['requests']} requests, "
                     + (f"about ${cost:.4f}" if cost is not None else "no price known (--gemini-price)"))  # fmt: skip
    return "\n".join(lines)
