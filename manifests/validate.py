"""Validation of what is read from a manifest: a file's schema against its table's (compatible types
a plain pandas round trip writes), values cast exactly or named by row and column, the tables' row
rules and statuses, and finite numbers where a consumer computes with them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from manifests.schema import SCHEMA_VERSION, TABLE_STATUSES


class ManifestError(ValueError):
    """A manifest is missing, unreadable or does not match its schema."""


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
    """Refuse rows that break the table's rules (`manifests.rules.ROW_RULES`): a shot whose end is not
    after its start, whose frame count disagrees, a non-positive frame rate, an ok caption that is
    empty. The message names the table, row, column and value, and what to do."""
    from manifests.rules import ROW_RULES

    for column, rule, broken in ROW_RULES.get(name, ()):
        if len(table) == 0 or column not in table.column_names:
            continue
        try:
            mask = broken(table)
        except KeyError:  # a rule over columns that were not read (a read of some columns only)
            continue
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


_NULLABLE_INTS = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                  pa.int64(): pd.Int64Dtype()}  # fmt: skip


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The table as pandas, with integer columns that hold nulls (a failed video's width, an unknown
    PTS) as pandas' nullable integers (`<NA>`), not floats: 320 stays 320, not 320.0."""
    frame = table.to_pandas()
    for name, column in zip(table.column_names, table.columns):
        if column.type in _NULLABLE_INTS and column.null_count:
            frame[name] = column.to_pandas(types_mapper=_NULLABLE_INTS.get)
    return frame
