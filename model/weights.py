"""Helpers every weight loader shares: the checkpoint and model-folder error types and a fast content hash."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or whose keys/shapes do not match the model."""


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or of an unknown family; the message names what."""


def checked_folder(path: str | os.PathLike, layout: str, parts: Sequence[str | tuple[str, ...]], needs: str) -> Path:
    """`path` when it is a folder holding every part (a tuple: any one of its names), else a
    ModelFolderError naming the `layout`, the missing parts and what the folder `needs`."""
    path = Path(path)
    if not path.is_dir():
        raise ModelFolderError(f"{path}: model folder not found; pass a local {layout} folder")
    options = [(part,) if isinstance(part, str) else part for part in parts]
    missing = [names[0] for names in options if not any((path / name).exists() for name in names)]
    if missing:
        raise ModelFolderError(f"{path} is not a complete {layout} folder: missing {', '.join(missing)}. {needs}")
    return path


def file_hash(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Content hash of a weights file (first and last 4 MiB plus the size: fast for GB files)."""
    size = os.path.getsize(path)
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()
