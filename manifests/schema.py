"""The single source of truth for every manifest table's columns and types."""

from __future__ import annotations

import hashlib
from enum import StrEnum

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


def _schema(name: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={"schema_version": str(SCHEMA_VERSION), "table": name})


VIDEOS = _schema(
    "videos",
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("error_stage", pa.string()),
        pa.field("size_bytes", pa.int64()),
        pa.field("container", pa.string()),
        pa.field("codec", pa.string()),
        pa.field("pix_fmt", pa.string()),
        pa.field("width", pa.int32()),  # displayed width, after rotation
        pa.field("height", pa.int32()),  # displayed height, after rotation
        pa.field("coded_width", pa.int32()),
        pa.field("coded_height", pa.int32()),
        pa.field("rotation", pa.int16()),  # degrees counter-clockwise to display upright
        pa.field("fps", pa.float64()),  # average frame rate over the whole stream
        pa.field("variable_fps", pa.bool_()),
        pa.field("num_frames", pa.int64()),
        pa.field("duration_s", pa.float64()),
        pa.field("time_base", pa.string()),  # e.g. "1/15360": unit of every *_pts column
        pa.field("has_audio", pa.bool_()),
        pa.field("video_stream", pa.int32()),  # the stream frames come from (cover art and stills skipped)
        pa.field("num_clips", pa.int32()),
        pa.field("num_shots", pa.int32()),
        pa.field("processing_s", pa.float64()),
    ],
)

CLIPS = _schema(
    "clips",
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),  # owned range, inclusive
        pa.field("end_frame", pa.int64(), nullable=False),  # owned range, exclusive
        pa.field("decode_start_frame", pa.int64()),  # owned range plus overlap
        pa.field("decode_end_frame", pa.int64()),
        pa.field("start_s", pa.float64()),
        pa.field("end_s", pa.float64()),
        pa.field("num_cuts", pa.int32()),
        pa.field("frames_decoded", pa.int64()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("processing_s", pa.float64()),
    ],
)

SHOTS = _schema(
    "shots",
    [
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("shot_index", pa.int32(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("start_frame", pa.int64(), nullable=False),  # inclusive, source timeline
        pa.field("end_frame", pa.int64(), nullable=False),  # exclusive, source timeline
        pa.field("num_frames", pa.int64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),  # from PTS, relative to stream start
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("duration_s", pa.float64(), nullable=False),
        pa.field("start_pts", pa.int64()),  # PTS of start_frame, in the video's time_base
        pa.field("end_pts", pa.int64()),  # PTS of end_frame (or end of stream)
        pa.field("time_base", pa.string()),
        pa.field("fps", pa.float64(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("rotation", pa.int16()),
        pa.field("clip_index", pa.int32()),  # clip that owns the shot's first frame
        pa.field("detector", pa.string()),
        pa.field("keyframe_frame", pa.int64()),
        pa.field("keyframe_path", pa.string()),  # relative to the manifest directory
        pa.field("status", pa.string(), nullable=False),  # ok | filtered
        pa.field("filter_reason", pa.string()),
    ],
)

SHOT_EMBEDDINGS = _schema(
    "shot_embeddings",
    [
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("clip_index", pa.int32()),
        pa.field("embedder", pa.string(), nullable=False),  # e.g. "viclip-l14", "clip", "color-layout"
        pa.field("checkpoint_hash", pa.string()),  # content hash of the weights (null: weight-free)
        pa.field("frames", pa.list_(pa.int64())),  # source frames the embedding was computed from
        # Written as a fixed-size list (float16) of the embedder's dimension; read back as a list.
        # Null when status is failed.
        pa.field("embedding", pa.list_(pa.float16())),
        pa.field("status", pa.string()),  # ok | failed (null in tables written before: ok)
        pa.field("error", pa.string()),
        pa.field("error_stage", pa.string()),
    ],
)

COMBINATIONS = _schema(
    "combinations",
    [
        pa.field("combination_id", pa.string(), nullable=False),  # hash of the ordered shot ids
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("group", pa.string()),  # the clip (or whole video) the shots were drawn from
        pa.field("shot_ids", pa.list_(pa.string()), nullable=False),  # in time order
        pa.field("pair_scores", pa.list_(pa.float32())),  # raw cosine of each pair (i<j, row-major)
        pa.field("pair_calibrated", pa.list_(pa.float32())),  # the same, calibrated (z-score in the group)
        pa.field("min_relevance", pa.float32()),  # min calibrated pair score
        pa.field("mean_relevance", pa.float32()),  # mean calibrated pair score
        pa.field("min_raw", pa.float32()),
        pa.field("mean_raw", pa.float32()),
        pa.field("total_frames", pa.int64()),
        pa.field("embedder", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # ok | filtered (with --keep-all)
        pa.field("filter_reason", pa.string()),
    ],
)

# Annotation statuses (Gemini): ok, or why a combination has no usable captions.
ANNOTATION_STATUSES = ("ok", "invalid", "blocked", "truncated", "error", "unannotated", "failed")

_CHARACTER = pa.struct([pa.field("name", pa.string()), pa.field("description", pa.string())])
_ANNOTATION_FIELDS = [
    pa.field("model", pa.string()),
    pa.field("prompt_version", pa.string()),
    pa.field("input_mode", pa.string()),  # video | frames
    pa.field("status", pa.string(), nullable=False),  # one of ANNOTATION_STATUSES
    pa.field("error", pa.string()),
    pa.field("error_stage", pa.string()),  # media | request, when the item failed
    pa.field("requests", pa.int32()),  # paid requests this row cost (0 when served from the cache)
    pa.field("prompt_tokens", pa.int64()),
    pa.field("output_tokens", pa.int64()),  # reply tokens, thinking excluded
    pa.field("thinking_tokens", pa.int64()),  # Gemini 2.5 thoughts, billed as output
    pa.field("from_cache", pa.bool_()),  # the reply was paid in an earlier run; this run cost nothing
]

ANNOTATIONS = _schema(
    "annotations",
    [
        pa.field("combination_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("shot_ids", pa.list_(pa.string())),
        pa.field("captions", pa.list_(pa.string())),  # one per shot, in order
        pa.field("characters", pa.list_(_CHARACTER)),  # ActorK and the description repeated in captions
        pa.field("background", pa.string()),
        *_ANNOTATION_FIELDS,
    ],
)

SHOT_CAPTIONS = _schema(
    "shot_captions",
    [
        pa.field("shot_id", pa.string(), nullable=False),
        pa.field("video_id", pa.string(), nullable=False),
        pa.field("caption", pa.string()),
        pa.field("characters", pa.list_(_CHARACTER)),
        pa.field("background", pa.string()),
        *_ANNOTATION_FIELDS,
    ],
)

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

TABLES: dict[str, pa.Schema] = {
    "videos": VIDEOS,
    "clips": CLIPS,
    "shots": SHOTS,
    "shot_embeddings": SHOT_EMBEDDINGS,
    "combinations": COMBINATIONS,
    "annotations": ANNOTATIONS,
    "shot_captions": SHOT_CAPTIONS,
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


def combination_id(shot_ids: list[str]) -> str:
    """A combination's id: a hash of its shots, in order."""
    return hashlib.blake2b("|".join(shot_ids).encode(), digest_size=10).hexdigest()
