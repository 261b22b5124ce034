"""Helpers every weight loader shares: the checkpoint and model-folder error types and a fast content hash."""

from __future__ import annotations

import hashlib
import os


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or whose keys/shapes do not match the model."""


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or of an unknown family; the message names what."""


def file_hash(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Content hash of a weights file (first and last 4 MiB plus the size: fast for GB files)."""
    size = os.path.getsize(path)
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    with open(path, "rb") as f:
        digest.update(f.read(chunk))
        f.seek(max(0, size - chunk))
        digest.update(f.read(chunk))
    return digest.hexdigest()
