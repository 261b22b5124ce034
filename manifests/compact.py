"""`python -m manifests compact DIR`: merge a manifest's many small part files into a few large ones.

The curation job writes one part file per video and table; at hundreds of thousands of videos,
opening the files dominates every read. Compaction writes, per table, one `part-compact-<id>.parquet`
holding every row a reader sees now (row groups of about 128 MB), whose Parquet metadata lists the
tokens of the files it replaces, and then deletes those files.

- Atomic: the compacted file appears complete (renamed into place, or one finished upload on an
  object store) or not at all.
- Safe while readers read: a reader that lists the folder between the rename and the deletes skips
  the files the compacted one replaces (`manifests.io.live_files`), so it never sees a row twice.
- Idempotent: a table already in one compacted file and nothing else is left as it is.
- The commit rule stays: rows of uncommitted videos are kept (a reader still filters them by the
  `videos` table), and a video redone or removed later writes its own part, which wins over its
  compacted rows.
- One writer: it takes the output folder's lock, so it never runs beside a curation job.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field

from manifests.io import (
    COMPACTED,
    REPLACES,
    SEQ,
    _committed_batches,
    _metadata,
    _read_live,
    _token,
    live_files,
    table_path,
    write_parquet,
)
from manifests.lock import OutputLock
from manifests.schema import TABLES
from manifests.store import location

ROW_GROUP_BYTES = 128 << 20


@dataclass
class CompactReport:
    tables: dict[str, tuple[int, int]] = field(default_factory=dict)  # table -> (files before, rows)

    def lines(self) -> list[str]:
        if not self.tables:
            return ["nothing to compact: every table is one file already"]
        return [f"{name}: {files} files -> 1 ({rows} rows)" for name, (files, rows) in sorted(self.tables.items())]


def compact(manifest_dir: str | os.PathLike) -> CompactReport:
    report = CompactReport()
    with OutputLock(manifest_dir, "compaction"):
        # `videos` last: its batch parts are the other tables' commit markers until those are compacted.
        for name in sorted(TABLES, key=lambda n: n == "videos"):
            schema = TABLES[name]
            folder = table_path(manifest_dir, name)
            if not folder.is_dir():
                continue
            live = live_files(folder, None if name == "videos" else _committed_batches(location(manifest_dir)))
            files = live.parts + live.compacted + live.batches
            if not files or (len(files) == 1 and live.compacted):  # nothing, or compacted already
                for leftover in live.replaced:  # an earlier compaction stopped before its deletes
                    leftover.unlink(missing_ok=True)
                continue
            table = _read_live(folder, schema)  # validated, by the reader's own rule
            every = files + live.replaced
            tokens = sorted(_token(f, _metadata(f).metadata or {}) for f in every)
            rows_per_group = max(1, ROW_GROUP_BYTES // max(1, table.nbytes // max(1, len(table))))
            write_parquet(folder / f"{COMPACTED}{uuid.uuid4().hex[:12]}.parquet", table,
                          {REPLACES: json.dumps(tokens).encode(), SEQ: str(time.time_ns()).encode()},
                          row_group_size=rows_per_group)  # fmt: skip
            for old in every:
                old.unlink(missing_ok=True)
            report.tables[name] = (len(files), len(table))
    return report
