"""The tables' row rules: what every reader of a table may rely on beyond the types, as (column, rule,
rows breaking it). `manifests.validate.check_rows` checks them on every read, so training never sees
a swapped shot, a non-positive frame rate or an empty ok caption."""

from __future__ import annotations

from manifests.schema import Status  # noqa: F401  (the rules compare statuses)


def _ok(table):
    import pyarrow.compute as pc

    return pc.equal(table.column("status"), "ok")


def _pts_elsewhere(t):
    """Rows whose start_pts, in seconds, is off from start_s by another amount than the rest of
    their video's shots (more than a quarter frame): their frames are another shot's."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    pts, start_s, fps = (t.column(c) for c in ("start_pts", "start_s", "fps"))
    if t.column("time_base").null_count == len(t) or pts.null_count == len(t):
        return None
    base = pc.dictionary_encode(t.column("time_base")).combine_chunks()
    seconds_per_tick = np.array([_fraction(v) for v in base.dictionary.to_pylist()] + [np.nan])
    ticks = seconds_per_tick[base.indices.fill_null(len(base.dictionary)).to_numpy(zero_copy_only=False)]
    offset = pts.to_numpy(zero_copy_only=False).astype(float) * ticks - start_s.to_numpy(zero_copy_only=False)
    video = pc.dictionary_encode(t.column("video_id")).combine_chunks().indices.to_numpy(zero_copy_only=False)
    known = np.isfinite(offset)
    low, high = np.full(video.max() + 1, np.inf), np.full(video.max() + 1, -np.inf)
    np.minimum.at(low, video[known], offset[known])
    np.maximum.at(high, video[known], offset[known])
    tolerance = 0.25 / np.maximum(fps.to_numpy(zero_copy_only=False), 1e-9) + 1e-3
    median = np.where(known, 0.0, np.nan)
    for v in np.unique(video[known][(high - low)[video[known]] > tolerance[known]]):  # only videos that disagree
        rows = known & (video == v)
        median[rows] = np.median(offset[rows])
    return pa.array(known & (np.abs(offset - np.where(np.isnan(median), offset, median)) > tolerance))


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
            (
                "start_pts",
                "start_pts must be the frame at start_s: within a video, start_pts x time_base - start_s is "
                "the same for every shot (the first frame's time), so this row's timestamps belong to another shot",
                _pts_elsewhere,
            ),
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


def _fraction(text: str | None) -> float:
    """'1/15360' -> 1/15360 seconds; NaN for anything else."""
    try:
        numerator, denominator = (text or "").split("/")
        return int(numerator) / int(denominator)
    except (ValueError, ZeroDivisionError):
        return float("nan")


class _LazyRules(dict):
    """The rules, built on first use (pyarrow.compute is not needed to import the schema)."""

    def get(self, name, default=()):
        if not self:
            self.update(_rules())
        return super().get(name, default)


ROW_RULES = _LazyRules()


# -- ids: one function per id, used by every writer (the job, the importer) ------------------------
