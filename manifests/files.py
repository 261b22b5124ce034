"""Atomic files: the one way anything in a manifest (or a training run) is written, and the rules for
names and paths read from a table, so a hostile id or path never places a file outside its folder."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manifests.lock import check_writes
from manifests.store import ObjectPath, location, within

OUTPUT_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # errors after which no output can be written


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def file_name(identifier: str) -> str:
    """A file name for an id read from a table: the id itself when it is a plain name (letters, digits,
    '.', '_', '-'; no path separator, no leading dot), else a hash of it, so a hostile id such as
    '../../outside' can never place a file outside its folder."""
    if _SAFE_NAME.fullmatch(identifier) and ".." not in identifier:
        return identifier
    import hashlib

    return "id-" + hashlib.blake2b(identifier.encode(), digest_size=12).hexdigest()


def inside(root: str | os.PathLike, relative: str) -> Path | None:
    """root/relative when that file lies inside the local folder `root` (links resolved), else None:
    a path read from a table is never followed out of the manifest."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    return target if target != base and within(base, target) else None


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path | ObjectPath:
    """The one way anything here is written: `write(tmp)` fills a temporary file next to `path`
    (its name starts with '.', so table readers skip it), which is then renamed into place. A
    failed write (full disk, an exception) leaves neither a partial file nor the temporary one.
    On an object store the finished local file is uploaded in one piece: complete or absent."""
    path = location(path)
    check_writes(path)  # fencing: a job that lost its output's lock writes nothing more
    if isinstance(path, ObjectPath):
        with tempfile.TemporaryDirectory(prefix="mask2dit-upload-") as folder:
            tmp = Path(folder) / f"upload{path.suffix}"
            write(tmp)
            path.upload(tmp)
        return path
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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path | ObjectPath:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path | ObjectPath:
    return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str)))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
