"""Manifest tables as parts: writing a video's part or a batch of videos, the commit rule, compaction's
files, and reading the live files of a table back, validated (manifests/validate.py) and written
atomically (manifests/files.py)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from manifests.files import OUTPUT_FULL, file_name, inside, write_atomic, write_bytes_atomic, write_json_atomic  # noqa: F401  # fmt: skip
from manifests.lock import check_writes
from manifests.schema import TABLES
from manifests.store import ObjectPath, arrow, location
from manifests.validate import ManifestError, _cast, _check_schema, check_finite, check_rows, check_statuses, to_frame  # noqa: F401  # fmt: skip

TOKEN = b"part_token"  # every part file's own id, in its Parquet metadata
REPLACES = b"replaces"  # a compacted file's metadata: the tokens of the files it holds the rows of
COMPACTED = "part-compact-"  # file name prefix of compacted files (python -m manifests compact)
BATCH = "part-batch-"  # file name prefix of commit batches (many videos, written by write_batch)
SEQ = b"seq"  # a batch's or compacted file's write time (ns): the newest one holding a video wins
COVERS = b"covers"  # a batch's metadata: every video it commits


def table_path(manifest_dir: str | os.PathLike, name: str) -> Path | ObjectPath:
    """Where table `name` lives in a manifest directory: `DIR/<name>.parquet` (file or folder);
    `manifest_dir` may be an object-store URL (`s3://bucket/manifest`, see manifests.store)."""
    if name not in TABLES:
        raise ManifestError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}")
    return location(manifest_dir) / f"{name}.parquet"


def to_arrow(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Build a table with exactly `schema`'s columns; missing nullable columns become nulls."""
    if isinstance(rows, pd.DataFrame):
        # Arrow's own conversion turns pandas' NaN/None into nulls, whatever the column's dtype.
        frame = rows.reindex(columns=schema.names)
        try:
            return pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as err:
            raise ManifestError(f"rows do not fit table {schema.metadata[b'table'].decode()}: {err}") from err
    rows = list(rows)
    columns = {}
    for field in schema:
        values = [row.get(field.name) for row in rows]
        if not field.nullable and any(v is None for v in values):
            raise ManifestError(f"column {field.name!r} of table {schema.metadata[b'table'].decode()} may not be null")
        columns[field.name] = pa.array(values, type=field.type)
    return pa.Table.from_pydict(columns, schema=schema)


def write_part(manifest_dir: str | os.PathLike, name: str, part: str, rows) -> Path:
    """Write (or replace) one part file of table `name`, atomically.

    Parts are keyed by a stable name (a video id), so writing the same part twice replaces it:
    re-running a job never duplicates rows. The temporary file starts with '.', which pandas and
    pyarrow skip when reading the folder, and is renamed into place only once complete.
    """
    schema = TABLES[name]
    table = rows if isinstance(rows, pa.Table) else to_arrow(rows, schema)
    check_statuses(table, name)
    return write_parquet(table_path(manifest_dir, name) / f"part-{part}.parquet", table)


def write_parquet(path: Path, table: pa.Table, metadata: Mapping[bytes, bytes] | None = None, **options) -> Path:
    """The one way a table file is written: atomically, zstd, with `metadata` and a token (fresh
    unless `metadata` gives one) in its Parquet metadata, so compaction can say which files it replaced."""
    extra = {TOKEN: uuid.uuid4().hex.encode()} | dict(metadata or {})
    table = table.replace_schema_metadata((table.schema.metadata or {}) | extra)
    return write_atomic(path, lambda tmp: pq.write_table(table, str(tmp), compression="zstd", **options))


def ensure_tables(manifest_dir: str | os.PathLike) -> list[str]:
    """Give every table that has no part yet an empty one, so that after a run every table exists
    with its schema (`pd.read_parquet(DIR/"combinations.parquet")` works when nothing qualified).
    Returns the tables it created."""
    created = []
    for name in TABLES:
        folder = table_path(manifest_dir, name)
        if not (folder.is_dir() and any(folder.glob("part-*.parquet"))) and not folder.is_file():
            write_part(manifest_dir, name, "empty", [])
            created.append(name)
    return created


def remove_part(manifest_dir: str | os.PathLike, name: str, part: str) -> None:
    """Drop a video's rows from a table: its part file goes; where batch or compacted files may hold
    the video's rows, an empty part takes its place (a video's own part wins over its rows there)."""
    folder = table_path(manifest_dir, name)
    check_writes(folder)
    if folder.is_dir() and any(f.name.startswith((COMPACTED, BATCH)) for f in folder.glob("part-*.parquet")):
        write_part(manifest_dir, name, part, [])
    else:
        (folder / f"part-{part}.parquet").unlink(missing_ok=True)


def read_table(
    manifest_dir: str | os.PathLike,
    name: str,
    *,
    missing_ok: bool = False,
    committed_only: bool = True,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Read and validate table `name` of a manifest directory as a pandas DataFrame.

    A video is committed when its row is in `videos` (the curation job writes it last, after the
    video's other parts). By default rows of uncommitted videos (a run stopped between the two
    writes) are left out of every other table; `committed_only=False` shows them. Manifests without
    a `videos` table (assembled by hand) are read whole.
    `columns` reads only those columns (each file's schema is still checked).
    The plain pandas equivalent, without validation, is `pd.read_parquet("DIR/shots.parquet")`.
    """
    path = table_path(manifest_dir, name)
    expected = TABLES[name]
    unknown = sorted(set(columns or ()) - set(expected.names))
    if unknown:
        raise ManifestError(f"table {name!r} has no column {', '.join(map(repr, unknown))}")
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return _read_table_once(manifest_dir, name, path, expected, missing_ok, committed_only, columns)
        except FileNotFoundError:
            # A file listed a moment ago is gone: compaction (or a commit's tidying) replaced it. What
            # replaced it is complete, so reading the folder again sees a consistent table.
            continue
    return _read_table_once(manifest_dir, name, path, expected, missing_ok, committed_only, columns)


READ_ATTEMPTS = 5


def _read_table_once(manifest_dir, name: str, path, expected: pa.Schema, missing_ok: bool, committed_only: bool,
                     columns: list[str] | None) -> pd.DataFrame:  # fmt: skip
    if not path.exists():
        if missing_ok:
            return _select(expected.empty_table(), columns).to_pandas()
        raise ManifestError(f"{path} does not exist; run `python curation/run.py --output {manifest_dir}` first")
    filtered = committed_only and name != "videos" and "video_id" in expected.names
    need = columns if columns is None or not filtered or "video_id" in columns else [*columns, "video_id"]
    table = _read_live(path, expected, need)
    if filtered:
        videos = table_path(manifest_dir, "videos")
        if videos.exists():  # only the ids are read: the commit markers
            committed = _read_live(videos, TABLES["videos"], columns=["video_id"]).column("video_id").combine_chunks()
            present = pa.compute.unique(table["video_id"])
            if not pa.compute.all(pa.compute.is_in(present, value_set=committed)).as_py():  # else nothing to drop
                table = table.filter(pa.compute.is_in(table["video_id"], value_set=committed))
    return to_frame(_select(table, columns))


def read_part(manifest_dir: str | os.PathLike, name: str, part: str) -> pd.DataFrame:
    """One video's rows of table `name` (its part file, or its rows in compacted files), validated;
    empty if there are none."""
    folder = table_path(manifest_dir, name)
    file = folder / f"part-{part}.parquet"
    if file.is_file() or not folder.is_dir():
        return read_files([file] if file.is_file() else [], TABLES[name]).to_pandas()
    return _read_live(folder, TABLES[name], video=part).to_pandas()  # its rows in batch or compacted files


def table_video_ids(manifest_dir: str | os.PathLike, name: str) -> set[str]:
    """The videos that have rows in table `name` (committed or not); empty if the table is missing."""
    path = table_path(manifest_dir, name)
    if not path.exists():
        return set()
    return set(_read_live(path, TABLES[name], columns=["video_id"]).column("video_id").to_pylist())


@dataclass
class LiveFiles:
    """The files of a table folder a reader uses.

    Three kinds of part file: a video's own part (`part-<video_id>`), a commit batch
    (`part-batch-<seq>`, many videos, written by `write_batch`) and a compacted file
    (`part-compact-<id>`, `python -m manifests compact`). The rules:
    - a file whose rows a present compacted file holds (its token is in that file's `replaces`) is
      skipped;
    - a batch counts once it is committed: its `videos` file exists (written last);
    - per video, a video's own part wins; else the newest batch or compacted file that holds (or
      covers, for a batch: every video it committed, rows or not) the video wins.
    """

    parts: list[Path]
    compacted: list[Path]
    replaced: list[Path]  # present, but their rows are in a compacted file
    batches: list[Path] = dataclasses.field(default_factory=list)
    seq: dict[Path, int] = dataclasses.field(default_factory=dict)  # batches and compacted files: when written
    covers: dict[Path, list[str]] = dataclasses.field(default_factory=dict)  # batches: the videos they commit
    rows: dict[Path, int] = dataclasses.field(default_factory=dict)  # every file's row count (its footer)
    footers: dict[Path, pq.FileMetaData] = dataclasses.field(default_factory=dict)  # read once, reused by the read

    @property
    def part_ids(self) -> list[str]:
        return [f.name.removeprefix("part-").removesuffix(".parquet") for f in self.parts]


def batch_id(file: Path) -> str:
    return file.name.removeprefix(BATCH).removesuffix(".parquet")


def live_files(folder: Path, committed_batches: set[str] | None = None, parts: bool = True) -> LiveFiles:
    """`committed_batches`: the batch ids whose `videos` file exists (None: every batch counts).
    `parts=False`: only the batch and compacted files (their footers only are read)."""
    files = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else [folder]
    special = [f for f in files if f.name.startswith((COMPACTED, BATCH))]
    if not special:
        return LiveFiles(files if parts else [], [], [])
    if not parts:
        files = special
    replaced_tokens: set[str] = set()
    tokens, metas, rows, footers = {}, {}, {}, {}
    for file in files:
        try:
            footer = _metadata(file)
        except (pa.ArrowException, OSError) as err:
            raise _unreadable(file, err) from err
        meta = footer.metadata or {}
        tokens[file], metas[file], rows[file], footers[file] = _token(file, meta), meta, footer.num_rows, footer
        if file.name.startswith(COMPACTED):
            replaced_tokens |= set(json.loads(meta.get(REPLACES, b"[]")))
    live = [f for f in files if tokens[f] not in replaced_tokens]
    batches = [f for f in live if f.name.startswith(BATCH)]
    if committed_batches is not None:
        batches = [f for f in batches if batch_id(f) in committed_batches]
    compacted = [f for f in live if f.name.startswith(COMPACTED)]
    seq = {f: int(metas[f].get(SEQ, b"0")) for f in batches + compacted}
    covers = {f: json.loads(metas[f].get(COVERS, b"[]")) for f in batches}
    return LiveFiles(
        [f for f in live if not f.name.startswith((COMPACTED, BATCH))], compacted,
        [f for f in files if tokens[f] in replaced_tokens], batches, seq, covers, rows, footers,
    )  # fmt: skip


def _token(file: Path, meta: dict) -> str:
    """A file's id: its own token, or for files written before tokens, its name, size and mtime."""
    if TOKEN in meta:
        return meta[TOKEN].decode()
    stat = file.stat()
    return f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}"


def _read_live(path: Path, expected: pa.Schema, columns: list[str] | None = None, video: str | None = None) -> pa.Table:
    """A table folder's rows by the `LiveFiles` rules; `video`: only that video's rows in batch and
    compacted files (read with a pushed-down filter; its own part is the caller's)."""
    name = expected.metadata[b"table"].decode()
    committed = None if name == "videos" else _committed_batches(path.parent)
    live = live_files(path, committed, parts=video is None)
    many = sorted(live.batches + live.compacted, key=lambda f: live.seq[f])
    if not many:
        return read_files(live.parts, expected, columns, live.footers)
    need = columns if columns is None or "video_id" in columns else [*columns, "video_id"]
    table = read_files(live.parts, expected, need, live.footers)
    held_rows = read_files(many, expected, need, live.footers) if video is None else None  # in file order, one read
    source = np.repeat(np.arange(len(many)), [live.rows[f] for f in many])
    if held_rows is None or len(source) != len(held_rows):  # one by one (or a file changed since its footer)
        pieces = [read_each_file([f], expected, need, video) for f in many]
        source = np.repeat(np.arange(len(many)), [len(p) for p in pieces])
        held_rows = pa.concat_tables(pieces)
    videos = held_rows.column("video_id")
    newest: dict[str, int] = {}  # the newest file holding or covering each video
    holding = []  # per file, the videos it has rows of
    for i, file in enumerate(many):
        first, stop = int(np.searchsorted(source, i)), int(np.searchsorted(source, i, side="right"))
        holding.append(set(pa.compute.unique(videos[first:stop]).to_pylist()))
        for video in holding[-1] | set(live.covers.get(file, ())):
            newest[video] = i
    for video in live.part_ids:  # a video's own part wins
        newest[video] = -1
    if any(newest[video] != i for i, held in enumerate(holding) for video in held):  # else every row stays
        keys = sorted(newest)
        where = pa.compute.index_in(videos, value_set=pa.array(keys, pa.string())).to_numpy(zero_copy_only=False)
        held_rows = held_rows.filter(pa.array(np.array([newest[k] for k in keys])[where] == source))
    table = pa.concat_tables([table, held_rows]) if len(table) else held_rows
    # In video order, each video's rows as written: the order that one part per video gave (a batch
    # holds its videos in the order they finished). Arrow's sort is stable.
    return _select(_in_video_order(table), columns)


def _in_video_order(table: pa.Table) -> pa.Table:
    if "video_id" not in table.column_names or len(table) < 2:
        return table
    ids = table.column("video_id")
    if not pa.compute.any(pa.compute.less(ids[1:], ids[:-1])).as_py():  # in order already (compacted)
        return table
    return table.take(pa.compute.sort_indices(table, sort_keys=[("video_id", "ascending")]))


def _committed_batches(manifest_dir: Path) -> set[str] | None:
    """The ids of the commit batches whose `videos` file exists; None where there is no videos table."""
    videos = manifest_dir / "videos.parquet"
    if not videos.is_dir():
        return None
    return {batch_id(f) for f in videos.glob(f"{BATCH}*.parquet")}


def tidy_batches(manifest_dir: str | os.PathLike) -> int:
    """Make the folders say what readers read, so a plain `pd.read_parquet` agrees with `read_table`:
    delete the batch parts of uncommitted batches (a killed run's, redone on resume) and drop from
    older batches the rows of videos a newer batch committed again. Run by the job, which holds the
    output's lock. Returns the files changed."""
    root = location(manifest_dir)
    changed = 0
    for name in TABLES:  # the hidden parts of a writer killed before it renamed them into place
        folder = table_path(root, name)
        for pending in folder.glob(f"{PENDING}*") if isinstance(folder, Path) and folder.is_dir() else ():
            pending.unlink(missing_ok=True)
            changed += 1
    committed = _committed_batches(root)
    if committed is None:
        return changed
    for name in TABLES:
        folder = table_path(root, name)
        if not folder.is_dir():
            continue
        live = live_files(folder, None)
        batches = sorted(live.batches, key=lambda f: live.seq[f])
        for file in [f for f in batches if name != "videos" and batch_id(f) not in committed]:
            file.unlink(missing_ok=True)
            changed += 1
        batches = [f for f in batches if name == "videos" or batch_id(f) in committed]
        newest = {video: file for file in batches for video in live.covers.get(file, ())}
        for file in batches:
            stale = {video for video in live.covers.get(file, ()) if newest[video] != file}
            if not stale:
                continue
            where = arrow(file)
            table = pq.read_table(where["path"], filesystem=where["filesystem"])
            table = table.filter(pa.compute.invert(pa.compute.is_in(table["video_id"], value_set=pa.array(
                sorted(stale), pa.string()))))  # fmt: skip
            covers = json.dumps(sorted(set(live.covers[file]) - stale)).encode()
            write_parquet(file, table, {COVERS: covers, TOKEN: (table.schema.metadata or {})[TOKEN]})
            changed += 1
    return changed


def write_batch(manifest_dir: str | os.PathLike, rows: dict[str, list[dict]], covers: list[str]) -> str:
    """Commit many videos at once: one part per table (`part-batch-<seq>`), the `videos` part last.

    `covers` names every video the batch commits (a video with no rows in a table, e.g. a failed
    one's shots, still replaces its older rows there). Before writing, the videos' own parts in these
    tables are deleted: a kill in between leaves those videos uncommitted (redone on resume), never
    with rows from two writes. Returns the batch id."""
    seq = time.time_ns()
    ident = f"{seq:020d}-{uuid.uuid4().hex[:8]}"
    extra = {SEQ: str(seq).encode(), COVERS: json.dumps(sorted(set(covers))).encode()}
    check_writes(manifest_dir)  # before the first deletion: a job that lost its lock changes nothing
    for name in rows:
        for video in covers:
            (table_path(manifest_dir, name) / f"part-{video}.parquet").unlink(missing_ok=True)
    staged = []
    for name in sorted(rows, key=lambda n: n == "videos"):  # the videos part last: the commit
        table = to_arrow(rows[name], TABLES[name])
        check_statuses(table, name)
        final = table_path(manifest_dir, name) / f"{BATCH}{ident}.parquet"
        # Locally each part is written under a hidden name (plain readers skip names starting with
        # '.') and all are renamed at the end, so a kill while writing leaves no rows any reader sees.
        staged.append((final.with_name(f"{PENDING}{final.name}") if isinstance(final, Path) else final, final))
        write_parquet(staged[-1][0], table, extra)
    for hidden, final in staged:
        if hidden != final:
            os.replace(hidden, final)
    return ident


PENDING = ".pending-"  # a batch part written but not yet renamed into place


def read_files(
    files: list[Path], expected: pa.Schema, columns: list[str] | None = None, known: dict | None = None
) -> pa.Table:
    """The files of one table as one validated table (of `columns` only, when given).

    Fast path: the footers are read first, each distinct file schema is checked once, the
    files of one schema are read together by `pyarrow.dataset` (multi-threaded), and the row rules
    run once over the whole table. Anything wrong takes the file-by-file path, whose errors name the
    file, row and column."""
    if not files:
        return _select(expected.empty_table(), columns)
    if len(files) == 1:
        return read_each_file(files, expected, columns)
    import pyarrow.dataset as ds  # here: importing it maps ~1 GiB of address space (matters under ulimit -v)

    try:
        footers = [known[f] for f in files] if known and all(f in known for f in files) else _footers(files)
        schemas = [footer.schema.to_arrow_schema() for footer in footers]
    except (pa.ArrowException, OSError):
        return read_each_file(files, expected, columns)
    groups: dict[str, list[int]] = {}
    for i, schema in enumerate(schemas):
        key = schema.to_string(show_schema_metadata=False) + repr((schema.metadata or {}).get(b"schema_version"))
        groups.setdefault(key, []).append(i)
    wanted = (
        expected if columns is None else pa.schema([expected.field(c) for c in columns], metadata=expected.metadata)
    )
    name = expected.metadata[b"table"].decode()
    tables, order = [], []
    try:
        for members in groups.values():
            schema = schemas[members[0]]
            _check_schema(schema, expected, files[members[0]])
            present = [c for c in wanted.names if schema.get_field_index(c) >= 0]
            places = [arrow(files[i]) for i in members]
            dataset = ds.dataset([p["path"] for p in places], schema=schema, format="parquet",
                                 filesystem=places[0]["filesystem"])  # fmt: skip
            table = dataset.to_table(columns=present, use_threads=True)
            for column in wanted.names:
                if column not in present:
                    field = wanted.field(column)
                    table = table.append_column(field, pa.nulls(len(table), field.type))
            tables.append(_cast(table.select(wanted.names), wanted, files[members[0]]))
            order.append(members)
        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        check_rows(table, name, files[0].parent)
    except (ManifestError, pa.ArrowException, OSError):
        return read_each_file(files, expected, columns)  # the exact error, naming the file
    if len(groups) > 1:  # rows in file order, as the file-by-file path gives them
        rows = np.array([footer.num_rows for footer in footers])
        starts = np.zeros(len(files), dtype=np.int64)
        position = 0
        for members in order:
            for i in members:
                starts[i] = position
                position += rows[i]
        if position != len(table):
            return read_each_file(files, expected, columns)
        table = table.take(np.concatenate([np.arange(starts[i], starts[i] + rows[i]) for i in range(len(files))]))
    return table


def _footers(files: list[Path]) -> list[pq.FileMetaData]:
    return [_metadata(file) for file in files]  # serial: 0.2 ms a file, faster than threads here


def _unreadable(file: Path | ObjectPath, err: Exception, what: str = "is not a readable Parquet file",
                todo: str = "delete it and re-run the job") -> Exception:  # fmt: skip
    """A file that vanished while being read (compaction replaced it: the reader starts again) apart
    from one that is there and damaged (named, with what to do)."""
    if isinstance(err, FileNotFoundError) or not file.exists():
        return FileNotFoundError(errno.ENOENT, "gone while being read (replaced by compaction or a commit)", str(file))
    return ManifestError(f"{file} {what} ({err}); {todo}")


def _metadata(file: Path | ObjectPath) -> pq.FileMetaData:
    where = arrow(file)
    return pq.read_metadata(where["path"], filesystem=where["filesystem"])


def _select(table: pa.Table, columns: list[str] | None) -> pa.Table:
    return table if columns is None else table.select(columns)


def read_each_file(
    files: list[Path], expected: pa.Schema, columns: list[str] | None = None, video: str | None = None
) -> pa.Table:
    """`read_files`' table read one file at a time (the rows of `video` only, when given): each file's
    schema checked and its missing nullable columns added on their own, so an error names the file.
    The slow path `read_files` falls back to, and the reference its one-dataset read is tested against."""
    tables = []
    only = [("video_id", "==", video)] if video is not None else None
    for file in files:
        try:
            where = arrow(file)
            schema = pq.read_schema(where["path"], filesystem=where["filesystem"])
        except (pa.ArrowInvalid, OSError) as err:
            raise _unreadable(file, err) from err
        _check_schema(schema, expected, file)
        present = [column for column in expected.names if schema.get_field_index(column) >= 0]
        try:
            table = pq.read_table(where["path"], columns=present, filters=only, filesystem=where["filesystem"])
        except (pa.ArrowException, OSError) as err:  # a damaged data page (e.g. ZSTD), a truncated file
            raise _unreadable(file, err, "is damaged and cannot be read", "restore it, or delete it and re-run the "
                              "job that wrote it") from err  # fmt: skip
        for column in expected.names:
            if column not in present:
                field = expected.field(column)
                table = table.append_column(field, pa.nulls(len(table), field.type))
        table = _cast(table.select(expected.names), expected, file)
        check_rows(table, expected.metadata[b"table"].decode(), file)
        tables.append(_select(table, columns))
    return pa.concat_tables(tables) if tables else _select(expected.empty_table(), columns)
