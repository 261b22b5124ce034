"""Atomic writing and validated reading of manifest tables (a Parquet file or a folder of parts)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from manifests.schema import SCHEMA_VERSION, TABLE_STATUSES, TABLES

OUTPUT_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # errors after which no output can be written


class ManifestError(ValueError):
    """A manifest is missing, unreadable or does not match its schema."""


def table_path(manifest_dir: str | os.PathLike, name: str) -> Path:
    """Where table `name` lives in a manifest directory: `DIR/<name>.parquet` (file or folder)."""
    if name not in TABLES:
        raise ManifestError(f"unknown table {name!r}; known tables: {', '.join(sorted(TABLES))}")
    return Path(manifest_dir) / f"{name}.parquet"


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
    final = table_path(manifest_dir, name) / f"part-{part}.parquet"
    return write_atomic(final, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def check_statuses(table: pa.Table, name: str) -> None:
    """Refuse a status outside the table's vocabulary (manifests.schema.TABLE_STATUSES)."""
    if "status" not in table.column_names:
        return
    allowed = TABLE_STATUSES[name]
    found = {v for v in table.column("status").to_pylist() if v is not None}
    unknown = sorted(found - allowed)
    if unknown:
        raise ManifestError(f"table {name}: unknown status {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(sorted(allowed))} (manifests.schema.Status)")  # fmt: skip


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
    (table_path(manifest_dir, name) / f"part-{part}.parquet").unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """The one way anything here is written: `write(tmp)` fills a temporary file next to `path`
    (its name starts with '.', so table readers skip it), which is then renamed into place. A
    failed write (full disk, an exception) leaves neither a partial file nor the temporary one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; the file is as shareable as any other
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _compatible(found: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column of type `found` can be read as `expected` by a safe cast: equal types, and what
    a plain pandas round trip writes (large_string, large/fixed-size lists, an all-null column typed
    null, integers as int64 or as float64 when they had nulls). The cast itself then checks values."""
    if found.equals(expected) or pa.types.is_null(found):
        return True
    kinds = (
        (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", lambda t: False)),
        (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list),
    )
    for kind in kinds:
        if any(k(found) for k in kind) and any(k(expected) for k in kind):
            return kind is kinds[0] or _compatible(found.value_type, expected.value_type)
    if pa.types.is_struct(found) and pa.types.is_struct(expected):
        names = {found.field(i).name: found.field(i).type for i in range(found.num_fields)}
        return all(
            expected.field(i).name not in names or _compatible(names[expected.field(i).name], expected.field(i).type)
            for i in range(expected.num_fields)
        )
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(k(found) for k in numeric) and any(k(expected) for k in numeric):
        return True
    return pa.types.is_boolean(found) and pa.types.is_boolean(expected)


def _check_schema(found: pa.Schema, expected: pa.Schema, where: Path) -> None:
    meta = found.metadata or {}
    version = meta.get(b"schema_version")
    table = expected.metadata[b"table"].decode()
    if version is not None and int(version) != SCHEMA_VERSION:
        raise ManifestError(
            f"{where}: written with manifest schema_version {version.decode()}, this code reads "
            f"version {SCHEMA_VERSION}; re-run the job that produced it with this version"
        )
    problems = []
    for field in expected:
        idx = found.get_field_index(field.name)
        if idx < 0:
            if not field.nullable:  # a nullable column added since the file was written reads as nulls
                problems.append(f"missing column {field.name!r}")
        elif not _compatible(found.field(idx).type, field.type):
            problems.append(f"column {field.name!r} is {found.field(idx).type}, expected {field.type}")
    if problems:
        raise ManifestError(f"{where} is not a valid {table!r} table: " + "; ".join(problems))


def read_table(
    manifest_dir: str | os.PathLike, name: str, *, missing_ok: bool = False, committed_only: bool = True
) -> pd.DataFrame:
    """Read and validate table `name` of a manifest directory as a pandas DataFrame.

    A video is committed when its row is in `videos` (the curation job writes it last, after the
    video's other parts). By default rows of uncommitted videos (a run stopped between the two
    writes) are left out of every other table; `committed_only=False` shows them. Manifests without
    a `videos` table (assembled by hand) are read whole.
    The plain pandas equivalent, without validation, is `pd.read_parquet("DIR/shots.parquet")`.
    """
    path = table_path(manifest_dir, name)
    expected = TABLES[name]
    if not path.exists():
        if missing_ok:
            return expected.empty_table().to_pandas()
        raise ManifestError(f"{path} does not exist; run `python curation/run.py --output {manifest_dir}` first")
    files = sorted(path.glob("part-*.parquet")) if path.is_dir() else [path]
    table = _read_files(files, expected)
    if committed_only and name != "videos" and "video_id" in expected.names:
        if table_path(manifest_dir, "videos").exists():
            committed = read_table(manifest_dir, "videos")["video_id"]
            table = table.filter(pa.compute.is_in(table["video_id"], value_set=pa.array(committed, pa.string())))
    return table.to_pandas()


def read_part(manifest_dir: str | os.PathLike, name: str, part: str) -> pd.DataFrame:
    """One part file of table `name` (e.g. one video's rows), validated; empty if it does not exist."""
    file = table_path(manifest_dir, name) / f"part-{part}.parquet"
    return _read_files([file] if file.is_file() else [], TABLES[name]).to_pandas()


def _read_files(files: list[Path], expected: pa.Schema) -> pa.Table:
    tables = []
    for file in files:
        try:
            schema = pq.read_schema(file)
        except (pa.ArrowInvalid, OSError) as err:
            raise ManifestError(f"{file} is not a readable Parquet file ({err}); delete it and re-run the job") from err
        _check_schema(schema, expected, file)
        present = [column for column in expected.names if schema.get_field_index(column) >= 0]
        try:
            table = pq.read_table(file, columns=present)
        except (pa.ArrowException, OSError) as err:  # a damaged data page (e.g. ZSTD), a truncated file
            raise ManifestError(f"{file} is damaged and cannot be read ({err}); restore it, or delete it and "
                                "re-run the job that wrote it") from err  # fmt: skip
        for column in expected.names:
            if column not in present:
                field = expected.field(column)
                table = table.append_column(field, pa.nulls(len(table), field.type))
        table = _cast(table.select(expected.names), expected, file)
        check_rows(table, expected.metadata[b"table"].decode(), file)
        tables.append(table)
    return pa.concat_tables(tables) if tables else expected.empty_table()


def _cast(table: pa.Table, expected: pa.Schema, file: Path) -> pa.Table:
    """`table` as exactly `expected`; a null in a non-nullable column or a value the type cannot hold
    is named by row and column."""
    name = expected.metadata[b"table"].decode()
    for field in expected:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            row = _first(pa.compute.is_null(column))
            raise ManifestError(f"{file}: table {name!r} row {row}{_row_key(table, row)} column {field.name!r} is "
                                "null (pandas NaN/None), and this column may not be; fill it or drop the row")  # fmt: skip
    try:
        return table.cast(expected)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as err:
        for field in expected:  # name the column whose values do not fit
            try:
                table.column(field.name).cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as column_err:
                raise ManifestError(f"{file}: table {name!r} column {field.name!r} cannot be read as {field.type} "
                                    f"({column_err}); fix its values or re-run the job") from err  # fmt: skip
        raise ManifestError(f"{file} does not fit table {name!r}: {err}") from err


def _first(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))[0])


def _row_key(table: pa.Table, row: int) -> str:
    for key in ("shot_id", "combination_id", "clip_id", "video_id"):
        if key in table.column_names:
            return f" ({key} {table.column(key)[row].as_py()})"
    return ""


def check_rows(table: pa.Table, name: str, where: str | os.PathLike) -> None:
    """Refuse rows that break the table's rules (`manifests.schema.ROW_RULES`): a shot whose end is not
    after its start, whose frame count disagrees, a non-positive frame rate, an ok caption that is
    empty. The message names the table, row, column and value, and what to do."""
    from manifests.schema import ROW_RULES

    for column, rule, broken in ROW_RULES.get(name, ()):
        if len(table) == 0 or column not in table.column_names:
            continue
        mask = broken(table)
        if mask is None or not pa.compute.any(mask).as_py():
            continue
        row = _first(pa.compute.fill_null(mask, False))
        value = table.column(column)[row].as_py()
        raise ManifestError(
            f"{where}: table {name!r} row {row}{_row_key(table, row)} column {column!r} is {value!r}: {rule}. "
            "Fix or drop the row (e.g. with pandas), or re-run curation for that video"
        )


def check_finite(frame: pd.DataFrame, table: str, columns: Iterable[str], where: str | os.PathLike = "") -> None:
    """Raise ManifestError naming the table, row and column of the first NaN, infinite or missing value
    among `columns` (numbers a consumer computes with: pandas reads NaN and null alike)."""
    for column in columns:
        if column not in frame.columns:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = int(bad[0])
            key = next((str(frame[k].iloc[row]) for k in ("shot_id", "combination_id", "video_id") if k in frame), "")
            raise ManifestError(
                f"{where or 'manifest'}: table {table!r} row {row}{f' ({key})' if key else ''} column {column!r} is "
                f"{frame[column].iloc[row]!r}: numbers must be finite; fix or drop the row, or re-run curation"
            )
