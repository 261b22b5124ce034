"""Resolve --input arguments (video files, folders searched recursively, text files of paths)."""

from __future__ import annotations

import os
from pathlib import Path

from manifests.store import ObjectPath, absolute, location

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".y4m", ".h264", ".hevc", ".265",
}  # fmt: skip
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def walk_videos(folder: Path, problems: list[tuple[str, str]]) -> list[str]:
    """Video files below `folder`, following symbolic links to folders; a link that loops back to a
    folder already being walked is recorded in `problems` (path, reason) instead of being followed."""
    found, active = [], set()

    def visit(directory: Path) -> None:
        real = os.path.realpath(directory)
        if real in active:
            problems.append((str(directory), f"symbolic link loop: {directory} leads back to {real}; not followed"))
            return
        active.add(real)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            problems.append((str(directory), f"cannot list folder: {err.strerror or err}"))
            entries = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_dir():  # follows links, so linked folders are searched too
                visit(path)
            elif entry.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                found.append(str(path))
        active.discard(real)

    visit(folder)
    return found


def stored_videos(prefix: ObjectPath, problems: list[tuple[str, str]]) -> list[str]:
    """Video objects below an object-store prefix (one listing, recursive)."""
    try:
        return [str(p) for p in prefix.walk_files() if p.suffix.lower() in VIDEO_SUFFIXES]
    except OSError as err:
        problems.append((str(prefix), f"cannot list {prefix}: {err}"))
        return []


def resolve_inputs(inputs: list[Path | ObjectPath], problems: list[tuple[str, str]] | None = None) -> list[str]:
    """Expand inputs into an ordered, de-duplicated list of paths.

    A path that does not exist is kept: it becomes a failed row with a clear error rather than
    stopping the run. Folders contribute files with a known video suffix; a text file lists one
    path per line (blank lines and lines starting with '#' are skipped; relative paths are
    relative to the list file). Folder problems (symbolic link loops, unreadable folders) go to
    `problems` as (path, reason), for the caller to record as failed rows.
    Object-store URLs work the same way: a prefix (s3://bucket/videos/) stands for the video
    objects below it, a list object may name local paths, URLs, or keys relative to itself.
    """
    problems = problems if problems is not None else []
    found: list[str] = []
    for item in inputs:
        item = location(item)
        stored = isinstance(item, ObjectPath)
        if stored and item.suffix.lower() not in LIST_SUFFIXES | VIDEO_SUFFIXES:
            found += stored_videos(item, problems)
        elif not stored and item.is_dir():
            found += walk_videos(item, problems)
        elif item.suffix.lower() in LIST_SUFFIXES and item.is_file():
            for line in item.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    path = location(line)
                    found.append(str(path if path.is_absolute() else item.parent / str(path)))
        else:
            found.append(str(item))
    return list(dict.fromkeys(absolute(p) for p in found))
