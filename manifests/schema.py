"""The single source of truth for every manifest table's columns and types."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, make_dataclass
from enum import StrEnum
from typing import Any, ClassVar

import pyarrow as pa

SCHEMA_VERSION = 1
"""Bump on any incompatible change; readers refuse tables written with another major version."""


class Status(StrEnum):
    """Every row status of every table. "filtered" is a decision about good data (e.g. a shot
    shorter than --min-shot-seconds); "failed" means something went wrong: `error` says what and
    `error_stage` where, and a re-run retries it. The rest describe Gemini's replies."""

    OK = "ok"
    FILTERED = "filtered"
    FAILED = "failed"
    INVALID = "invalid"  # the reply broke a caption rule after every re-ask
    BLOCKED = "blocked"  # a safety block
    TRUNCATED = "truncated"  # the reply hit the token limit
    ERROR = "error"  # the request failed (HTTP, timeout, malformed reply)
    UNANNOTATED = "unannotated"  # nothing was sent (no key, budget, interrupted)


STATUS_OK, STATUS_FILTERED, STATUS_FAILED = Status.OK, Status.FILTERED, Status.FAILED


# --- records: one typed row per table; each table's pyarrow schema is derived from its record ----


def column(arrow: pa.DataType, *, required: bool = False):
    """A record field stored as `arrow`; `required` fields have no default and may never be null."""
    metadata = {"arrow": arrow, "required": required}
    return field(metadata=metadata) if required else field(default=None, metadata=metadata)


class Record:
    """A row of one table: typed fields, built by keyword, with the mapping access the rows of pandas
    and plain dicts have (`row["shot_id"]`, `row.get(...)`), so every reader takes either."""

    __slots__ = ()
    TABLE: ClassVar[str]
    _names: ClassVar[tuple[str, ...]]  # the columns, in order
    _columns: ClassVar[frozenset[str]]

    def __getitem__(self, key: str) -> Any:
        if key not in self._columns:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self._columns:
            raise KeyError(f"{key!r} is not a column of table {self.TABLE}")
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return key in self._columns

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self._columns else default

    def keys(self) -> tuple[str, ...]:
        return self._names

    def values(self) -> list[Any]:
        return [getattr(self, name) for name in self._names]

    def items(self) -> list[tuple[str, Any]]:
        return list(zip(self._names, self.values()))

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items())

    @classmethod
    def schema(cls) -> pa.Schema:
        """The table's pyarrow schema, in field order, with the version and table name as metadata."""
        columns = [pa.field(f.name, f.metadata["arrow"], nullable=not f.metadata["required"]) for f in fields(cls)]
        return pa.schema(columns, metadata={"schema_version": str(SCHEMA_VERSION), "table": cls.TABLE})


def _finish_record(cls: type[Record], table: str) -> type[Record]:
    """Every record class's table name and column list, set once."""
    cls.TABLE, cls._names = table, tuple(f.name for f in fields(cls))
    cls._columns = frozenset(cls._names)
    return cls


def record(table: str):
    """A record class of `table`: a keyword-only dataclass with slots."""
    return lambda cls: _finish_record(dataclass(kw_only=True, slots=True)(cls), table)


@record("videos")
class VideoRecord(Record):
    video_id: str = column(pa.string(), required=True)
    source_path: str = column(pa.string(), required=True)
    status: Status = column(pa.string(), required=True)
    error: str | None = column(pa.string())
    error_stage: str | None = column(pa.string())
    size_bytes: int | None = column(pa.int64())
    container: str | None = column(pa.string())
    codec: str | None = column(pa.string())
    pix_fmt: str | None = column(pa.string())
    width: int | None = column(pa.int32())  # displayed width, after rotation
    height: int | None = column(pa.int32())  # displayed height, after rotation
    coded_width: int | None = column(pa.int32())
    coded_height: int | None = column(pa.int32())
    rotation: int | None = column(pa.int16())  # degrees counter-clockwise to display upright
    fps: float | None = column(pa.float64())  # average frame rate over the whole stream
    variable_fps: bool | None = column(pa.bool_())
    num_frames: int | None = column(pa.int64())
    duration_s: float | None = column(pa.float64())
    time_base: str | None = column(pa.string())  # e.g. "1/15360": unit of every *_pts column
    has_audio: bool | None = column(pa.bool_())
    video_stream: int | None = column(pa.int32())  # the stream frames come from (cover art and stills skipped)
    num_clips: int | None = column(pa.int32())
    num_shots: int | None = column(pa.int32())
    processing_s: float | None = column(pa.float64())


@record("clips")
class ClipRecord(Record):
    clip_id: str = column(pa.string(), required=True)
    video_id: str = column(pa.string(), required=True)
    clip_index: int = column(pa.int32(), required=True)
    start_frame: int = column(pa.int64(), required=True)  # owned range, inclusive
    end_frame: int = column(pa.int64(), required=True)  # owned range, exclusive
    decode_start_frame: int | None = column(pa.int64())  # owned range plus overlap
    decode_end_frame: int | None = column(pa.int64())
    start_s: float | None = column(pa.float64())
    end_s: float | None = column(pa.float64())
    num_cuts: int | None = column(pa.int32())
    frames_decoded: int | None = column(pa.int64())
    status: Status = column(pa.string(), required=True)
    error: str | None = column(pa.string())
    processing_s: float | None = column(pa.float64())


@record("shots")
class ShotRecord(Record):
    video_id: str = column(pa.string(), required=True)
    shot_id: str = column(pa.string(), required=True)
    shot_index: int = column(pa.int32(), required=True)
    source_path: str = column(pa.string(), required=True)
    start_frame: int = column(pa.int64(), required=True)  # inclusive, source timeline
    end_frame: int = column(pa.int64(), required=True)  # exclusive, source timeline
    num_frames: int = column(pa.int64(), required=True)
    start_s: float = column(pa.float64(), required=True)  # from PTS, relative to stream start
    end_s: float = column(pa.float64(), required=True)
    duration_s: float = column(pa.float64(), required=True)
    start_pts: int | None = column(pa.int64())  # PTS of start_frame, in the video's time_base
    end_pts: int | None = column(pa.int64())  # PTS of end_frame (or end of stream)
    time_base: str | None = column(pa.string())
    fps: float = column(pa.float64(), required=True)
    width: int = column(pa.int32(), required=True)
    height: int = column(pa.int32(), required=True)
    rotation: int | None = column(pa.int16())
    clip_index: int | None = column(pa.int32())  # clip that owns the shot's first frame
    detector: str | None = column(pa.string())
    keyframe_frame: int | None = column(pa.int64())
    keyframe_path: str | None = column(pa.string())  # relative to the manifest directory
    status: Status = column(pa.string(), required=True)  # ok | filtered
    filter_reason: str | None = column(pa.string())


@record("shot_embeddings")
class ShotEmbeddingRecord(Record):
    shot_id: str = column(pa.string(), required=True)
    video_id: str = column(pa.string(), required=True)
    clip_index: int | None = column(pa.int32())
    embedder: str = column(pa.string(), required=True)  # e.g. "viclip-l14", "clip", "color-layout"
    checkpoint_hash: str | None = column(pa.string())  # content hash of the weights (null: weight-free)
    frames: list[int] | None = column(pa.list_(pa.int64()))  # source frames the embedding was computed from
    # Written as a fixed-size list (float16) of the embedder's dimension; read back as a list.
    # Null when status is failed.
    embedding: Any = column(pa.list_(pa.float16()))
    status: Status | None = column(pa.string())  # ok | failed (null in tables written before: ok)
    error: str | None = column(pa.string())
    error_stage: str | None = column(pa.string())


@record("combinations")
class CombinationRecord(Record):
    combination_id: str = column(pa.string(), required=True)  # hash of the ordered shot ids
    video_id: str = column(pa.string(), required=True)
    group: str | None = column(pa.string())  # the clip (or whole video) the shots were drawn from
    shot_ids: list[str] = column(pa.list_(pa.string()), required=True)  # in time order
    pair_scores: list[float] | None = column(pa.list_(pa.float32()))  # raw cosine of each pair (i<j, row-major)
    pair_calibrated: list[float] | None = column(pa.list_(pa.float32()))  # the same, calibrated (z-score in the group)
    min_relevance: float | None = column(pa.float32())  # min calibrated pair score
    mean_relevance: float | None = column(pa.float32())  # mean calibrated pair score
    min_raw: float | None = column(pa.float32())
    mean_raw: float | None = column(pa.float32())
    total_frames: int | None = column(pa.int64())
    embedder: str | None = column(pa.string())
    status: Status = column(pa.string(), required=True)  # ok | filtered (with --keep-all)
    filter_reason: str | None = column(pa.string())


# Annotation statuses (Gemini): ok, or why a combination has no usable captions.
ANNOTATION_STATUSES = (Status.OK, Status.INVALID, Status.BLOCKED, Status.TRUNCATED, Status.ERROR, Status.UNANNOTATED,
                       Status.FAILED)  # fmt: skip

_CHARACTER = pa.struct([pa.field("name", pa.string()), pa.field("description", pa.string())])


def _reply_fields() -> list[tuple]:
    """What every annotation row records about its reply, after its own columns (fresh fields each call)."""
    return [
        ("model", str | None, column(pa.string())),
        ("prompt_version", str | None, column(pa.string())),
        ("input_mode", str | None, column(pa.string())),  # video | frames
        ("status", Status, column(pa.string(), required=True)),  # one of ANNOTATION_STATUSES
        ("error", str | None, column(pa.string())),
        ("error_stage", str | None, column(pa.string())),  # media | request, when the item failed
        ("requests", int | None, column(pa.int32())),  # paid requests this row cost (0 when served from the cache)
        ("prompt_tokens", int | None, column(pa.int64())),
        ("output_tokens", int | None, column(pa.int64())),  # reply tokens, thinking excluded
        ("thinking_tokens", int | None, column(pa.int64())),  # Gemini 2.5 thoughts, billed as output
        ("from_cache", bool | None, column(pa.bool_())),  # paid in an earlier run; this run cost nothing
    ]


def _annotation_record(name: str, table: str, own: list[tuple]) -> type[Record]:
    cls = make_dataclass(name, own + _reply_fields(), bases=(Record,), kw_only=True, slots=True)
    cls.__module__ = __name__
    return _finish_record(cls, table)


AnnotationRecord = _annotation_record("AnnotationRecord", "annotations", [
    ("combination_id", str, column(pa.string(), required=True)),
    ("video_id", str, column(pa.string(), required=True)),
    ("shot_ids", list[str] | None, column(pa.list_(pa.string()))),
    ("captions", list[str] | None, column(pa.list_(pa.string()))),  # one per shot, in order
    ("characters", list[dict] | None, column(pa.list_(_CHARACTER))),  # ActorK and the description repeated in captions
    ("background", str | None, column(pa.string())),
])  # fmt: skip

ShotCaptionRecord = _annotation_record("ShotCaptionRecord", "shot_captions", [
    ("shot_id", str, column(pa.string(), required=True)),
    ("video_id", str, column(pa.string(), required=True)),
    ("caption", str | None, column(pa.string())),
    ("characters", list[dict] | None, column(pa.list_(_CHARACTER))),
    ("background", str | None, column(pa.string())),
])  # fmt: skip


# One record type per table, in the order of the pipeline.
RECORDS: dict[str, type[Record]] = {
    cls.TABLE: cls
    for cls in (
        VideoRecord,
        ClipRecord,
        ShotRecord,
        ShotEmbeddingRecord,
        CombinationRecord,
        AnnotationRecord,
        ShotCaptionRecord,
    )  # fmt: skip
}

TABLES: dict[str, pa.Schema] = {name: cls.schema() for name, cls in RECORDS.items()}
VIDEOS, CLIPS, SHOTS, SHOT_EMBEDDINGS, COMBINATIONS, ANNOTATIONS, SHOT_CAPTIONS = TABLES.values()

# The statuses each table may hold, checked whenever a table is written.
TABLE_STATUSES: dict[str, frozenset[str]] = {
    "videos": frozenset({Status.OK, Status.FAILED}),
    "clips": frozenset({Status.OK, Status.FAILED}),
    "shots": frozenset({Status.OK, Status.FILTERED}),
    "shot_embeddings": frozenset({Status.OK, Status.FAILED}),
    "combinations": frozenset({Status.OK, Status.FILTERED}),
    "annotations": frozenset(ANNOTATION_STATUSES),
    "shot_captions": frozenset(ANNOTATION_STATUSES),
}


# --- row rules -----------------------------------------------------------------------------------
# What every reader of a table may rely on beyond the types: (column, rule, rows breaking it).
# `manifests.io.read_table` checks them on every read, so training never sees a swapped shot.


def _ok(table):
    import pyarrow.compute as pc

    return pc.equal(table.column("status"), "ok")


def _rules():
    import pyarrow.compute as pc

    def shots_end(t):
        return pc.less_equal(t.column("end_frame"), t.column("start_frame"))

    def shots_count(t):
        return pc.not_equal(t.column("num_frames"), pc.subtract(t.column("end_frame"), t.column("start_frame")))

    def positive(column):
        return lambda t: pc.invert(pc.greater(t.column(column), 0))  # NaN and <= 0 both break it

    def negative(column):
        return lambda t: pc.less(t.column(column), 0)

    def ok_caption_empty(t):
        caption = t.column("caption")
        return pc.and_(
            _ok(t),
            pc.or_(
                pc.is_null(caption), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(caption, ""))), 0)
            ),
        )

    def ok_captions_missing(t):
        import pyarrow as pa

        captions, shots = t.column("captions"), t.column("shot_ids")
        missing = pc.or_(pc.is_null(captions), pc.equal(pc.fill_null(pc.list_value_length(captions), 0), 0))
        wrong = pc.and_(pc.is_valid(shots), pc.not_equal(pc.list_value_length(captions), pc.list_value_length(shots)))
        flat = pc.list_flatten(captions)
        blank = pc.or_(pc.is_null(flat), pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(pc.fill_null(flat, ""))), 0))
        blank_rows = set(pc.list_parent_indices(captions).filter(blank).to_pylist())
        has_blank = pa.array([row in blank_rows for row in range(len(t))])
        return pc.and_(_ok(t), pc.or_(pc.or_(missing, pc.fill_null(wrong, False)), has_blank))

    def empty_list(column):
        return lambda t: pc.equal(pc.fill_null(pc.list_value_length(t.column(column)), 0), 0)

    return {
        "shots": (
            ("end_frame", "end_frame must be after start_frame (frames [start_frame, end_frame))", shots_end),
            ("num_frames", "num_frames must equal end_frame - start_frame", shots_count),
            ("fps", "fps must be a positive number", positive("fps")),
            ("start_frame", "start_frame must be >= 0", negative("start_frame")),
            ("width", "width must be positive", positive("width")),
            ("height", "height must be positive", positive("height")),
        ),
        "clips": (("end_frame", "end_frame must be after start_frame", shots_end),),
        "combinations": (("shot_ids", "a combination needs at least one shot", empty_list("shot_ids")),),
        "shot_captions": (("caption", "a caption with status ok must be non-empty text", ok_caption_empty),),
        "annotations": (
            ("captions", "an annotation with status ok needs one non-empty caption per shot", ok_captions_missing),
        ),
    }


class _LazyRules(dict):
    """The rules, built on first use (pyarrow.compute is not needed to import the schema)."""

    def get(self, name, default=()):
        if not self:
            self.update(_rules())
        return super().get(name, default)


ROW_RULES = _LazyRules()


# -- ids: one function per id, used by every writer (the job, the importer) ------------------------


def shot_id(video_id: str, start_frame: int) -> str:
    """A shot's id: its video and first frame (stable across re-runs, sortable in time order)."""
    return f"{video_id}_{start_frame:07d}"


def clip_id(video_id: str, clip_index: int) -> str:
    """A clip's id: its video and its index in the video."""
    return f"{video_id}_c{clip_index:03d}"


def combination_id(shot_ids: list[str]) -> str:
    """A combination's id: a hash of its shots, in order."""
    return hashlib.blake2b("|".join(shot_ids).encode(), digest_size=10).hexdigest()
