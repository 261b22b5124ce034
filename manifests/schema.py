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


# --- records: one typed row per table; each table's pyarrow schema is derived from its record ----


# What a column means wherever it appears (a record's `doc` says it where a table means something of its own).
SHARED_DOCS = {
    "video_id": "content fingerprint of the source video (size + 3 MiB sampled from start, middle, end): the same file under any name or path has one id",
    "source_path": "where the source video was read from (a local path or an object-store URL)",
    "shot_id": "id of the shot: its video id and first frame, `<video_id>_<start_frame:07d>`",
    "error": "what went wrong, with the file and what to do (null unless the row failed)",
    "width": "displayed width in pixels, after rotation",
    "height": "displayed height in pixels, after rotation",
    "fps": "average frame rate of the stream (frames per second)",
    "time_base": 'unit of every *_pts column, as a fraction of a second (e.g. "1/15360")',
    "characters": "the characters, each {name: ActorK, description}; every caption repeats a character's description verbatim",
    "background": "the one background description the captions share",
}


def column(arrow: pa.DataType, *, required: bool = False, doc: str = ""):
    """A record field stored as `arrow`; `required` fields have no default and may never be null. `doc`
    says what the column means (with its unit), or SHARED_DOCS does for a column every table means alike:
    it is the column's Parquet field metadata ("description") and its row in docs/columns.md."""
    metadata = {"arrow": arrow, "required": required, "doc": doc}
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
        columns = [pa.field(f.name, f.metadata["arrow"], nullable=not f.metadata["required"],
                            metadata={"description": doc} if (doc := f.metadata["doc"] or SHARED_DOCS.get(f.name)) else None)
                   for f in fields(cls)]  # fmt: skip
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
    status: Status = column(pa.string(), required=True, doc="ok (probed and curated) or failed (see error)")
    error: str | None = column(pa.string())
    error_stage: str | None = column(
        pa.string(), doc="the stage that failed (probe, detect, reconcile, embed, media, request), null unless failed"
    )
    size_bytes: int | None = column(pa.int64(), doc="file size in bytes")
    container: str | None = column(
        pa.string(), doc='container format as FFmpeg names it (e.g. "mov,mp4,m4a,3gp,3g2,mj2")'
    )
    codec: str | None = column(pa.string(), doc='video codec (e.g. "h264")')
    pix_fmt: str | None = column(pa.string(), doc='pixel format of the decoded frames (e.g. "yuv420p")')
    width: int | None = column(pa.int32())
    height: int | None = column(pa.int32())
    coded_width: int | None = column(pa.int32(), doc="width of the coded frames, before rotation")
    coded_height: int | None = column(pa.int32(), doc="height of the coded frames, before rotation")
    rotation: int | None = column(
        pa.int16(), doc="degrees counter-clockwise the frames are turned to display upright (0, 90, 180, 270)"
    )
    fps: float | None = column(pa.float64())
    variable_fps: bool | None = column(
        pa.bool_(), doc="whether frame durations vary (the frame index comes from PTS either way)"
    )
    num_frames: int | None = column(pa.int64(), doc="frames in the video stream")
    duration_s: float | None = column(pa.float64(), doc="duration of the video stream in seconds")
    time_base: str | None = column(pa.string())
    has_audio: bool | None = column(pa.bool_(), doc="whether the file has an audio stream")
    video_stream: int | None = column(
        pa.int32(), doc="index of the stream frames come from (cover art and stills are skipped)"
    )
    num_clips: int | None = column(pa.int32(), doc="clip windows the video was split into (--clip-minutes)")
    num_shots: int | None = column(pa.int32(), doc="shots found, filtered ones included")
    processing_s: float | None = column(pa.float64(), doc="seconds from probe to commit for this video")


@record("clips")
class ClipRecord(Record):
    clip_id: str = column(pa.string(), required=True, doc="id of the clip: `<video_id>_c<clip_index:03d>`")
    video_id: str = column(pa.string(), required=True)
    clip_index: int = column(pa.int32(), required=True, doc="0-based position of the clip in its video")
    start_frame: int = column(pa.int64(), required=True, doc="first frame the clip owns (0-based source frame index)")
    end_frame: int = column(
        pa.int64(),
        required=True,
        doc="one past the last frame the clip owns: the owned span is [start_frame, end_frame)",
    )
    decode_start_frame: int | None = column(
        pa.int64(), doc="first frame decoded: start_frame less the --overlap-seconds context"
    )
    decode_end_frame: int | None = column(pa.int64(), doc="one past the last frame decoded: end_frame plus the overlap")
    start_s: float | None = column(pa.float64(), doc="start of the owned span in seconds from the stream start")
    end_s: float | None = column(pa.float64(), doc="end of the owned span in seconds (exclusive)")
    num_cuts: int | None = column(pa.int32(), doc="cuts found in the owned span")
    frames_decoded: int | None = column(
        pa.int64(), doc="frames the detection pass decoded for this clip (overlap included)"
    )
    status: Status = column(pa.string(), required=True, doc="ok or failed (see error)")
    error: str | None = column(pa.string())
    processing_s: float | None = column(pa.float64(), doc="seconds this item took inside its worker")


@record("shots")
class ShotRecord(Record):
    video_id: str = column(pa.string(), required=True)
    shot_id: str = column(pa.string(), required=True)
    shot_index: int = column(pa.int32(), required=True, doc="0-based position of the shot in its video")
    source_path: str = column(pa.string(), required=True)
    start_frame: int = column(
        pa.int64(), required=True, doc="first frame of the shot (0-based index on the source timeline)"
    )
    end_frame: int = column(
        pa.int64(),
        required=True,
        doc="one past the last frame: the shot is the half-open span [start_frame, end_frame)",
    )
    num_frames: int = column(pa.int64(), required=True, doc="end_frame - start_frame")
    start_s: float = column(
        pa.float64(), required=True, doc="time of start_frame in seconds, from its PTS, relative to the stream start"
    )
    end_s: float = column(pa.float64(), required=True, doc="time of end_frame in seconds (exclusive end)")
    duration_s: float = column(pa.float64(), required=True, doc="end_s - start_s")
    start_pts: int | None = column(pa.int64(), doc="PTS of start_frame, in time_base units (readers seek by it)")
    end_pts: int | None = column(pa.int64(), doc="PTS of end_frame (or the end of the stream), in time_base units")
    time_base: str | None = column(pa.string())
    fps: float = column(pa.float64(), required=True)
    width: int = column(pa.int32(), required=True)
    height: int = column(pa.int32(), required=True)
    rotation: int | None = column(pa.int16(), doc="degrees counter-clockwise the frames are turned to display upright")
    clip_index: int | None = column(
        pa.int32(), doc="the clip window (0-based, in time order) that owns the shot's first frame"
    )
    detector: str | None = column(
        pa.string(),
        doc='the detector and settings that found the cuts (e.g. "adaptive(threshold=3,min_scene_frames=15)")',
    )
    keyframe_frame: int | None = column(pa.int64(), doc="source frame index of the keyframe JPEG")
    keyframe_path: str | None = column(pa.string(), doc="the keyframe JPEG, relative to the manifest folder")
    status: Status = column(pa.string(), required=True, doc="ok, or filtered (kept, but not used: see filter_reason)")
    filter_reason: str | None = column(
        pa.string(),
        doc='why the shot is filtered, naming the setting (e.g. "shorter than --min-shot-seconds 2"); null when ok',
    )
    # Quality signals, measured for every shot whether or not a filter uses them (re-threshold in pandas).
    mean_luma: float | None = column(pa.float32(), doc="mean BT.601 luma (0-255) of the frames sampled for keyframes")
    motion_mean: float | None = column(
        pa.float32(),
        doc="mean motion over the shot: codec motion-vector length in px/frame at source resolution "
        "(motion_source motion_vectors), or mean luma change per frame (frame_diff)",
    )
    motion_min_patch: float | None = column(
        pa.float32(), doc="the weakest of 4x4 regions inside the active picture: its mean motion (px/frame)"
    )
    motion_source: str | None = column(pa.string(), doc="motion_vectors, or frame_diff where the codec exports none")
    crop_x: int | None = column(
        pa.int32(), doc="the active picture inside black bars: left edge, upright pixels at source resolution"
    )
    crop_y: int | None = column(pa.int32(), doc="the active picture: top edge")
    crop_w: int | None = column(pa.int32(), doc="the active picture: width (the frame's width without bars)")
    crop_h: int | None = column(pa.int32(), doc="the active picture: height")
    text_area: float | None = column(
        pa.float32(),
        doc="largest fraction of the active picture covered by recognised burned-in text in one OCR'd frame "
        "(null: not read, e.g. --no-text or filtered before)",
    )
    text: list[str] | None = column(pa.list_(pa.string()), doc="the burned-in strings OCR recognised")
    duplicate_of: str | None = column(pa.string(), doc="shot_id of the earlier shot of the video this one repeats")
    aesthetic: float | None = column(
        pa.float32(), doc="LAION aesthetic predictor score (1-10) when --aesthetic-checkpoint is given"
    )


@record("shot_embeddings")
class ShotEmbeddingRecord(Record):
    shot_id: str = column(pa.string(), required=True)
    video_id: str = column(pa.string(), required=True)
    clip_index: int | None = column(
        pa.int32(), doc="the clip window (0-based, in time order) that owns the shot's first frame"
    )
    embedder: str = column(
        pa.string(), required=True, doc='what made the embedding (e.g. "viclip-l14", "clip", "color-layout")'
    )
    checkpoint_hash: str | None = column(
        pa.string(), doc="content hash of the embedder's weights (null for weight-free embedders)"
    )
    frames: list[int] | None = column(pa.list_(pa.int64()), doc="source frame indices the embedding was computed from")
    # Written as a fixed-size list (float16) of the embedder's dimension; read back as a list.
    # Null when status is failed.
    embedding: Any = column(
        pa.list_(pa.float16()), doc="the L2-normalised shot embedding (float16; null when status is failed)"
    )
    status: Status | None = column(
        pa.string(), doc="ok or failed (null in tables written before the column existed: ok)"
    )
    error: str | None = column(pa.string())
    error_stage: str | None = column(
        pa.string(), doc="the stage that failed (probe, detect, reconcile, embed, media, request), null unless failed"
    )


@record("combinations")
class CombinationRecord(Record):
    combination_id: str = column(pa.string(), required=True, doc="hash of the ordered shot ids")
    video_id: str = column(pa.string(), required=True)
    group: str | None = column(
        pa.string(), doc="the clip (or the whole video, with --within video) the shots were drawn from"
    )
    shot_ids: list[str] = column(
        pa.list_(pa.string()), required=True, doc="the shots of the multi-shot sample, in time order"
    )
    pair_scores: list[float] | None = column(
        pa.list_(pa.float32()), doc="raw cosine similarity of each shot pair (i<j, row-major), in [-1, 1]"
    )
    pair_calibrated: list[float] | None = column(
        pa.list_(pa.float32()),
        doc="each pair's relevance as a z-score: its cosine against all pairs of its group, in standard deviations",
    )
    min_relevance: float | None = column(
        pa.float32(), doc="the weakest pair's calibrated relevance (z-score), what --min-relevance thresholds"
    )
    mean_relevance: float | None = column(pa.float32(), doc="the mean calibrated relevance of the pairs (z-score)")
    min_raw: float | None = column(pa.float32(), doc="the weakest pair's raw cosine")
    mean_raw: float | None = column(pa.float32(), doc="the mean raw cosine of the pairs")
    total_frames: int | None = column(pa.int64(), doc="frames of all the shots together")
    embedder: str | None = column(pa.string(), doc="the embedder whose embeddings were compared")
    status: Status = column(pa.string(), required=True, doc="ok, or filtered (kept with --keep-all: see filter_reason)")
    filter_reason: str | None = column(pa.string(), doc="why the combination is filtered; null when ok")


# Annotation statuses (Gemini): ok, or why a combination has no usable captions.
ANNOTATION_STATUSES = (Status.OK, Status.INVALID, Status.BLOCKED, Status.TRUNCATED, Status.ERROR, Status.UNANNOTATED,
                       Status.FAILED)  # fmt: skip

_CHARACTER = pa.struct([pa.field("name", pa.string()), pa.field("description", pa.string())])


def _reply_fields() -> list[tuple]:
    """What every annotation row records about its reply, after its own columns (fresh fields each call)."""
    return [
        (
            "model",
            str | None,
            column(
                pa.string(),
                doc='the captioning model: a Gemini model ("gemini-2.5-flash") or a local folder as NAME@DIGEST',
            ),
        ),
        (
            "prompt_version",
            str | None,
            column(pa.string(), doc="version of the caption prompt and rules (curation/captions.py)"),
        ),
        ("input_mode", str | None, column(pa.string(), doc="how the shots were shown: video or frames")),
        (
            "status",
            Status,
            column(
                pa.string(),
                required=True,
                doc="ok, or why there is no usable caption: invalid (broke a rule after every re-ask), blocked, truncated, error (the request failed), failed (its media), unannotated (nothing sent: no key, budget, interrupted)",
            ),
        ),
        (
            "error",
            str | None,
            column(pa.string()),
        ),
        ("error_stage", str | None, column(pa.string(), doc="media or request, when the item failed")),
        (
            "requests",
            int | None,
            column(pa.int32(), doc="paid requests this row cost (0 when served from the reply cache)"),
        ),
        ("prompt_tokens", int | None, column(pa.int64(), doc="prompt tokens of the requests")),
        ("output_tokens", int | None, column(pa.int64(), doc="reply tokens, thinking excluded")),
        ("thinking_tokens", int | None, column(pa.int64(), doc="thinking tokens (billed as output)")),
        (
            "from_cache",
            bool | None,
            column(pa.bool_(), doc="the reply was paid in an earlier run; this run cost nothing"),
        ),
        (
            "seconds",
            float | None,
            column(
                pa.float64(),
                doc="the captioner's time on this row: Gemini's requests, or a local model's share "
                "of its batched generation",
            ),
        ),
    ]


def _annotation_record(name: str, table: str, own: list[tuple]) -> type[Record]:
    cls = make_dataclass(name, own + _reply_fields(), bases=(Record,), kw_only=True, slots=True)
    cls.__module__ = __name__
    return _finish_record(cls, table)


AnnotationRecord = _annotation_record("AnnotationRecord", "annotations", [
    ("combination_id", str, column(pa.string(), required=True, doc="the captioned combination (combinations.combination_id)")),
    ("video_id", str, column(pa.string(), required=True)),
    ("shot_ids", list[str] | None, column(pa.list_(pa.string()), doc="its shots, in time order")),
    ("captions", list[str] | None, column(pa.list_(pa.string()), doc="one caption per shot, in the order of shot_ids")),
    ("characters", list[dict] | None, column(pa.list_(_CHARACTER))),
    ("background", str | None, column(pa.string())),
])  # fmt: skip

ShotCaptionRecord = _annotation_record("ShotCaptionRecord", "shot_captions", [
    ("shot_id", str, column(pa.string(), required=True)),
    ("video_id", str, column(pa.string(), required=True)),
    ("caption", str | None, column(pa.string(), doc="the shot's caption")),
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
# Shots that repeat a shot elsewhere in the manifest (python -m curation.dedup): one file at the
# manifest's root, corpus_duplicates.parquet, rewritten whole by each run of the command.
CORPUS_DUPLICATES = pa.schema(
    [
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("duplicate_of", pa.string(), nullable=False),  # the group's first shot (by shot_id)
        pa.field("similarity", pa.float32(), nullable=False),  # the shot's best cosine within its group
        pa.field("embedder", pa.string(), nullable=False),
    ],
    metadata={"schema_version": str(SCHEMA_VERSION), "table": "corpus_duplicates"},
)

# The shots columns the quality signals fill (curation/measures.py and the text step).
SIGNAL_COLUMNS = ("mean_luma", "motion_mean", "motion_min_patch", "motion_source", "crop_x", "crop_y", "crop_w",
                  "crop_h", "text_area", "text", "duplicate_of", "aesthetic")  # fmt: skip
VIDEOS, CLIPS, SHOTS, SHOT_EMBEDDINGS, COMBINATIONS, ANNOTATIONS, SHOT_CAPTIONS = TABLES.values()


def columns_markdown() -> str:
    """docs/columns.md: a table per manifest table, a row per column (name, type, required, meaning)."""
    out = ["# Manifest columns", "",
           "Generated from `manifests/schema.py` by `python -m manifests columns > docs/columns.md` (a test keeps "
           "them equal). Each description is also the column's Parquet field metadata (`description`). Frame numbers "
           "are 0-based indices on the source video's timeline; spans are half-open, `[start, end)`.", ""]  # fmt: skip
    for name, schema in TABLES.items():
        out += [f"## {name}", "", "| column | type | required | meaning |", "|---|---|---|---|"]
        for f in schema:
            meaning = (f.metadata or {}).get(b"description", b"").decode().replace("|", "\\|")
            out.append(f"| `{f.name}` | {f.type} | {'yes' if not f.nullable else ''} | {meaning} |")
        out.append("")
    return "\n".join(out)


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


def shot_id(video_id: str, start_frame: int) -> str:
    """A shot's id: its video and first frame (stable across re-runs, sortable in time order)."""
    return f"{video_id}_{start_frame:07d}"


def clip_id(video_id: str, clip_index: int) -> str:
    """A clip's id: its video and its index in the video."""
    return f"{video_id}_c{clip_index:03d}"


def combination_id(shot_ids: list[str]) -> str:
    """A combination's id: a hash of its shots, in order."""
    return hashlib.blake2b("|".join(shot_ids).encode(), digest_size=10).hexdigest()
