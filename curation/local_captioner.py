"""Captions from an open vision-language model (Qwen2.5-VL, Qwen3-VL) on the cluster's own GPUs.

`--captioner local --captioner-model FOLDER` replaces the Gemini requests with Ray actors that each
hold one copy of the model (`model.vl_captioner`: vLLM where it can run, transformers anywhere).
The contract is Gemini's: the same prompt and caption rules (`curation.captions`), the same
statuses and bounded re-asks, the same reply cache. What differs:

- the reply is decoded under the reply's JSON schema (with exactly one description per shot), so it
  always parses; the rules (Actor names, verbatim descriptions, English) are still checked, and a
  reply that breaks them is re-asked with the reasons, then recorded `invalid`;
- each shot is given to the model as a video: the frames the annotate stage cuts for Gemini's video
  input (--gemini-video-fps, --gemini-video-max-seconds, --gemini-max-side), resized to at most
  --captioner-max-pixels each;
- nothing leaves the cluster and no key is needed. The reply cache is keyed by a digest of the
  model folder's files, so a reply is served again only to the same model, prompt and media.

The driver cuts each item's media in Ray tasks, batches --captioner-batch items per actor call and
writes each reply to the cache the moment it is back. An actor that dies fails its batch's rows
(`failed`, error_stage caption): they are not cached, and a re-run captions them.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from curation.captions import (
    REASK_EXCERPT,
    SYSTEM_PROMPT,
    CaptionReply,
    excerpt,
    reply_schema,
    validate_reply,
)
from curation.config import AnnotateConfig
from curation.gemini import Annotation
from curation.stage import Failure, Remote, Resources
from manifests.io import write_json_atomic
from manifests.schema import Status
from manifests.store import location

log = logging.getLogger("curation")


@dataclass
class CaptionItem:
    """One combination (or single shot) to caption: its shots' lengths and frames, in order."""

    item_id: str
    durations: list[float]
    frames: list  # one uint8 array (T, H, W, 3) per shot


@dataclass
class _Chat:
    item: CaptionItem
    messages: list[dict]
    annotation: Annotation = field(default_factory=lambda: Annotation(status=Status.ERROR))
    done: bool = False


def first_messages(item: CaptionItem, schema: dict) -> list[dict]:
    """The chat of a first ask: Gemini's system prompt with the reply schema spelled out, then each
    shot's label and its video, in order."""
    n = len(item.frames)
    system = SYSTEM_PROMPT.format(n=n) + "\nAnswer with one JSON object of this schema: " + json.dumps(schema)
    parts = []
    for index, (seconds, _) in enumerate(zip(item.durations, item.frames)):
        parts += [{"type": "text", "text": f"Shot {index + 1} of {n} ({seconds:.1f} s):"},
                  {"type": "video", "video": index}]  # fmt: skip
    return [{"role": "system", "content": system}, {"role": "user", "content": parts}]


def judge(
    text: str, finished: bool, num_shots: int, settings: AnnotateConfig
) -> tuple[str, list[str], CaptionReply | None]:
    """A reply's status (ok, truncated, or invalid with the rules it breaks)."""
    if not finished:
        return Status.TRUNCATED, [f"reply cut at --captioner-max-new-tokens ({settings.local.max_new_tokens})"], None
    try:
        reply = CaptionReply.model_validate_json(text)
    except ValueError as err:
        return Status.INVALID, [f"the reply is not JSON of the requested schema ({str(err).splitlines()[0]})"], None
    problems = validate_reply(reply, num_shots)
    return (Status.INVALID, problems, reply) if problems else (Status.OK, [], reply)


class LocalCaptionRemote(Remote):
    """Ray actors holding one Qwen-VL model each; an item is a batch of `CaptionItem`s, the result one
    `Annotation` per item. Re-asks happen here, batched across the items that need one."""

    name = "caption"
    actors = True

    def __init__(self, settings: AnnotateConfig, gpus: float = 0.0, logits_processors=None):
        self.settings = settings
        self.resources = Resources(cpus=settings.local.cpus or 0.0, gpus=gpus)
        self.logits_processors = logits_processors  # a callable (batch size) -> extra processors; tests force replies
        self.model = None

    def setup(self) -> None:
        from model.vl_captioner import load_vl_model

        local = self.settings.local
        self.model = load_vl_model(local.model, engine=local.engine, dtype=local.dtype, max_pixels=local.max_pixels)
        log.info("caption actor: %s on %s", local.model, self.model.engine)

    def process(self, items: list[CaptionItem]) -> list[Annotation]:
        chats = [_Chat(item, first_messages(item, reply_schema(len(item.frames)))) for item in items]
        for _ in range(self.settings.max_reasks + 1):
            waiting = [chat for chat in chats if not chat.done]
            if not waiting:
                break
            self._ask(waiting)
        for chat in chats:
            if not chat.done:
                chat.annotation.status = Status.INVALID
        return [chat.annotation for chat in chats]

    def _ask(self, chats: list[_Chat]) -> None:
        """One batched generate per schema (items of one shot count share it); a batch that fails
        (out of memory, say) is asked again one item at a time, and an item that fails alone is an error."""
        by_count: dict[int, list[_Chat]] = {}
        for chat in chats:
            by_count.setdefault(len(chat.item.frames), []).append(chat)
        for count, group in by_count.items():
            try:
                self._generate(group, count)
            except Exception as err:  # noqa: BLE001  (the model's own failure, recorded per row)
                if len(group) == 1:
                    chat = group[0]
                    chat.annotation.status, chat.done = Status.ERROR, True
                    chat.annotation.error, chat.annotation.error_stage = f"{type(err).__name__}: {err}", "caption"
                    continue
                for chat in group:
                    self._ask([chat])

    def _generate(self, chats: list[_Chat], num_shots: int) -> None:
        from model.vl_captioner import Request

        settings = self.settings
        requests = [Request(chat.messages, chat.item.frames, fps=settings.video_fps) for chat in chats]
        extra = self.logits_processors(len(chats)) if self.logits_processors else None
        replies = self.model.generate(requests, reply_schema(num_shots), settings.local.max_new_tokens,
                                      temperature=settings.temperature, logits_processors=extra)  # fmt: skip
        for chat, reply in zip(chats, replies):
            result = chat.annotation
            result.requests += 1
            result.prompt_tokens += reply.prompt_tokens
            result.output_tokens += reply.output_tokens
            result.seconds += reply.seconds
            status, problems, parsed = judge(reply.text, reply.finished, num_shots, settings)
            result.status = status
            result.error = excerpt("; ".join(problems), REASK_EXCERPT) if problems else None
            if status == Status.OK:
                result.captions, result.background = list(parsed.shots), parsed.background.strip()
                result.characters = [c.model_dump() for c in parsed.characters]
            if status != Status.INVALID:
                chat.done = True
                continue
            chat.messages = chat.messages[:2] + [
                {"role": "assistant", "content": excerpt(reply.text, REASK_EXCERPT)},
                {"role": "user", "content": f"Your reply broke these rules: {result.error}. Answer again, fixing them."},
            ]  # fmt: skip


def media_key(settings: AnnotateConfig) -> str:
    """What the local model is shown, as part of each reply's cache key."""
    local = settings.local
    return (f"video:{settings.video_fps:g}fps:{settings.video_max_seconds:g}s:{settings.max_side}px:"
            f"{local.max_pixels}area:{'crop' if settings.crop_bars else 'full'}:{local.max_new_tokens}tok")  # fmt: skip


def model_identity(settings: AnnotateConfig, cache_folder) -> str:
    """'FOLDER_NAME@DIGEST': the model folder and a digest of its files (memoised beside the reply
    cache by size and mtime, so an unchanged 16 GB folder is read once)."""
    from model.vl_captioner import folder_digest

    folder = settings.local.model
    memo_path = location(cache_folder) / "model_digests.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    before = dict(memo)
    digest = folder_digest(folder, memo)
    if memo != before:
        write_json_atomic(memo_path, memo)
    return f"{folder.name}@{digest[:16]}"


def caption_stage_resources(settings: AnnotateConfig) -> tuple[Resources, int]:
    """(one actor's resources, actors): one GPU each and one actor per GPU on a cluster with GPUs, one
    CPU actor otherwise, unless --captioner-gpus / --captioner-actors / --captioner-cpus say."""
    import ray

    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    gpus = settings.local.gpus if settings.local.gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if gpus > cluster_gpus:
        raise ValueError(f"--captioner-gpus {gpus:g} but the Ray cluster has {cluster_gpus:g} GPUs")
    actors = settings.local.actors or (max(1, int(cluster_gpus // gpus)) if gpus > 0 else 1)
    cpus = settings.local.cpus if settings.local.cpus is not None else (1.0 if gpus > 0 else 0.0)
    return Resources(cpus=cpus, gpus=gpus), actors


def ask_locally(todo: list[tuple[str, list[dict]]], stage, driver, results: dict) -> bool:
    """The local captioner's part of `annotate_items`: media in Ray tasks, batches to the caption
    actors, each reply cached as it arrives. Returns whether the run was interrupted."""
    from curation.gemini import ReplyCache

    settings, cache, captioner = stage.settings, stage.cache, stage.caption
    batch: list[CaptionItem] = []

    def captioned(items: list[CaptionItem]):
        def done(result) -> None:
            if isinstance(result, Failure):  # the actor died holding the batch (or its setup failed)
                for item in items:
                    results[item.item_id] = Annotation(status=Status.FAILED, error=f"caption actor: {result.error}",
                                                       error_stage="caption")  # fmt: skip
                return
            for item, annotation in zip(items, result):
                if annotation.paid:  # on disk the moment it is back: a killed run redoes none of it
                    cache.put(ReplyCache.key(item.item_id, stage.captioner_id, stage.media_id), annotation)
                results[item.item_id] = annotation

        return done

    def flush() -> None:
        if batch:
            driver.executor.submit(captioner.name, list(batch), captioned(list(batch)))
            batch.clear()

    def prepared(item_id: str, shots: list[dict]):
        def done(result) -> None:
            if isinstance(result, Failure):
                results[item_id] = Annotation.media_failed(result)
                return
            batch.append(CaptionItem(item_id, [float(s["duration_s"]) for s in shots], result))
            if len(batch) >= settings.local.batch:
                flush()

        return done

    began = time.perf_counter()
    try:
        for item_id, shots in todo:
            driver.work(stage, shots, prepared(item_id, shots))
        driver.drain()
        flush()
        driver.drain()
    except KeyboardInterrupt:
        driver.executor.cancel()
        for item_id, _ in todo:
            results.setdefault(item_id, Annotation(status=Status.UNANNOTATED, final=False,
                                                   error="the run was interrupted; re-run to caption it"))  # fmt: skip
        return True
    log.info("local captions: %d items in %.1f s", len(todo), time.perf_counter() - began)
    return False
