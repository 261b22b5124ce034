"""The manifest's corpus-wide duplicates file (`corpus_duplicates.parquet` at its root, written by
`python -m curation.dedup`): shots that repeat a shot elsewhere in the manifest. Training's
pretraining pool skips them; its schema is `manifests.schema.CORPUS_DUPLICATES`."""

from __future__ import annotations

import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from manifests.io import ManifestError, write_atomic
from manifests.schema import CORPUS_DUPLICATES
from manifests.store import location

FILE = "corpus_duplicates.parquet"


def write_corpus_duplicates(manifest_dir: str | os.PathLike, rows: pd.DataFrame):
    """Replace the file with `rows` (its columns: CORPUS_DUPLICATES), atomically."""
    table = pa.Table.from_pandas(rows, schema=CORPUS_DUPLICATES, preserve_index=False)
    return write_atomic(location(manifest_dir) / FILE, lambda tmp: pq.write_table(table, tmp))


def corpus_duplicates(manifest_dir: str | os.PathLike) -> set[str]:
    """The shot ids found to repeat an earlier shot of the manifest (empty if the command never ran)."""
    path = location(manifest_dir) / FILE
    if not path.exists():
        return set()
    try:
        with path.open("rb") as handle:
            return set(pq.read_table(handle, columns=["shot_id"]).column("shot_id").to_pylist())
    except (pa.ArrowInvalid, KeyError) as err:
        raise ManifestError(f"{path}: not a corpus duplicates file ({err}); delete it or re-run "
                            "python -m curation.dedup") from err  # fmt: skip
