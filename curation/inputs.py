"""Resolve --input arguments (video files, folders searched recursively, text files of paths)."""

from __future__ import annotations

from pathlib import Path

VIDEO_SUFFIXES = {
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv", ".3gp", ".ogv", ".y4m", ".h264", ".hevc", ".265",
}  # fmt: skip
LIST_SUFFIXES = {".txt", ".lst", ".list"}


def resolve_inputs(inputs: list[Path]) -> list[str]:
    """Expand inputs into an ordered, de-duplicated list of paths.

    A path that does not exist is kept: it becomes a failed row with a clear error rather than
    stopping the run. Folders contribute files with a known video suffix; a text file lists one
    path per line (blank lines and lines starting with '#' are skipped; relative paths are
    relative to the list file).
    """
    found: list[str] = []
    for item in inputs:
        item = Path(item).expanduser()
        if item.is_dir():
            found += sorted(str(p) for p in item.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
        elif item.is_file() and item.suffix.lower() in LIST_SUFFIXES:
            for line in item.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    path = Path(line).expanduser()
                    found.append(str(path if path.is_absolute() else item.parent / path))
        else:
            found.append(str(item))
    return list(dict.fromkeys(str(Path(p).absolute()) for p in found))
