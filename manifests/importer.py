"""Bring datasets prepared for the official Mask²DiT code into this project's manifests.

    python -m manifests import datasets/pretrain.csv --root /data --output out/pretrain
    python -m manifests import datasets/sft.json --root /data --output out/sft --scenes 3
    python -m manifests import openvid.csv --output out/openvid          # any CSV with path,caption

Formats (detected from the file):
- official pretrain CSV: columns fps,width,height,caption,path,num_frame; one clip file per row.
- plain CSV: columns path,caption (OpenVid / Panda style).
- official SFT JSON: a list of {"prefix", "values": [{"vid", "width", "height", "duration", "fps",
  "url", "caption"}]}; one file per shot, shots in story order.

Every file is probed (frame count, rate, size, rotation) by `manifests.probe`, and becomes one
video with one shot spanning it. Captions go to `shot_captions` (status ok), so pretraining reads
them; an SFT story of n shots becomes the combinations of `--scenes` consecutive shots (each window
the official loader could draw), captioned in `annotations`. A missing or unreadable file, a bad
row or a row without a caption becomes a `failed` row in `videos` with its line (CSV) or entry
(JSON) and the reason; the import goes on. Tables are rewritten whole, so re-running gives the
same manifest.

Paths: relative paths start at --root (default: the file's folder); one that leaves it through
`../` is a failed row, and so is an absolute path outside an explicit --root, unless
`--allow-outside-root`. Without --root, absolute paths are imported as named (and counted). A file named
twice keeps its first row (the later ones are reported); an SFT story that names one file twice
gives no window with a repeated shot. Files may start with a UTF-8 byte-order mark.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from manifests.io import write_json_atomic, write_part
from manifests.probe import ProbeError, VideoProbe, failed_video, path_id, probe
from manifests.schema import (
    TABLES,
    AnnotationRecord,
    CombinationRecord,
    Record,
    ShotCaptionRecord,
    ShotRecord,
    Status,
)
from manifests.schema import combination_id as make_combination_id
from manifests.store import ObjectPath, is_url, location

PRETRAIN_COLUMNS = ("fps", "width", "height", "caption", "path", "num_frame")
PLAIN_COLUMNS = ("path", "caption")
PART = "import"  # one part per table: an import rewrites it whole
MAX_CAPTION_CHARS = 65_536  # a longer "caption" is a broken row (T5/umT5 read a few hundred tokens)
IMPORT_MODEL = "imported"  # the `model` of imported captions: written by people or another pipeline


class ImportFormatError(ValueError):
    """The file as a whole is not one of the known formats; the message says which columns/keys it needs."""


@dataclass
class Entry:
    """One clip file named by the source: where it was named, its path and caption."""

    where: str  # "line 3" or "entry 2, shot 1"
    path: str
    caption: str | None
    raw_absolute: bool = False  # the source named an absolute path


@dataclass
class ImportResult:
    format: str
    shots: int = 0
    combinations: int = 0
    failures: list[dict] = field(default_factory=list)  # {"where", "path", "error"}
    notes: list[str] = field(default_factory=list)  # rows that were skipped on purpose (duplicates, repeats)

    def lines(self) -> list[str]:
        head = f"imported {self.shots} clips ({self.format})"
        if self.format == "sft-json":
            head += f", {self.combinations} combinations"
        lines = [head + f", {len(self.failures)} failed"] + [f"  {f['where']}: {f['error']}" for f in self.failures]
        return lines + [f"  note: {note}" for note in self.notes]


def read_entries(source: Path | ObjectPath, root: Path | ObjectPath | None) -> tuple[str, list[Entry], list[list[int]]]:
    """(format, entries, stories): stories are lists of entry indices in order (SFT JSON only)."""
    if not source.is_file():
        raise ImportFormatError(f"{source}: file not found")
    base = root if root is not None else source.parent

    def resolve(value) -> str:
        text = str(value).strip() if value is not None else ""
        if not text or absolute(text):
            return text
        return str(base / text) if isinstance(base, ObjectPath) else os.path.normpath(base / text)

    def absolute(value) -> bool:
        return value is not None and (os.path.isabs(str(value).strip()) or is_url(str(value).strip()))

    if source.suffix.lower() == ".json":
        try:
            data = json.loads(source.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ImportFormatError(f"{source}: not valid JSON ({err})") from err
        if not isinstance(data, list):
            raise ImportFormatError(
                f"{source}: expected a list of {{'prefix', 'values': [...]}} (the official sft.json)"
            )
        entries, stories = [], []
        for i, story in enumerate(data):
            values = story.get("values") if isinstance(story, dict) else None
            if not isinstance(values, list):
                entries.append(Entry(f"entry {i}", "", None))
                stories.append([])
                continue
            indices = []
            for j, value in enumerate(values):
                value = value if isinstance(value, dict) else {}
                caption = value.get("caption")
                entries.append(Entry(f"entry {i}, shot {j}", resolve(value.get("url")),
                                     caption if isinstance(caption, str) else None, absolute(value.get("url"))))  # fmt: skip
                indices.append(len(entries) - 1)
            stories.append(indices)
        return "sft-json", entries, stories

    csv.field_size_limit(64 * 2**20)  # a huge field is a row to refuse, not a crash of the whole import
    try:
        with source.open("r", newline="", encoding="utf-8-sig") as f:  # -sig: a byte-order mark is not a column name
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if set(PRETRAIN_COLUMNS) <= set(columns):
                kind = "pretrain-csv"
            elif set(PLAIN_COLUMNS) <= set(columns):
                kind = "plain-csv"
            else:
                raise ImportFormatError(
                    f"{source}: columns {columns} are neither the official pretrain CSV ({','.join(PRETRAIN_COLUMNS)}) "
                    f"nor a plain CSV with {','.join(PLAIN_COLUMNS)}"
                )
            entries = []
            for row in reader:
                row = {(k or "").strip(): v for k, v in row.items()}
                caption = row.get("caption")
                entries.append(Entry(f"line {reader.line_num}", resolve(row.get("path")),
                                     caption if caption and caption.strip() else None, absolute(row.get("path"))))  # fmt: skip
    except UnicodeDecodeError as err:
        raise ImportFormatError(f"{source}: not a UTF-8 text CSV ({err})") from err
    except csv.Error as err:
        raise ImportFormatError(f"{source}: not a readable CSV near line {reader.line_num} ({err})") from err
    return kind, entries, []


def outside(path: str, base: Path | ObjectPath) -> bool:
    """Whether `path` (already joined and normalised) lies outside the folder `base`."""
    if is_url(path) or isinstance(base, ObjectPath):
        return not str(location(path)).startswith(str(base).rstrip("/") + "/")
    resolved, folder = os.path.realpath(path), os.path.realpath(base)
    return os.path.commonpath([resolved, folder]) != folder


def whole_file_shot(facts: VideoProbe) -> ShotRecord:
    """The one shot of a clip file: all its frames."""
    return facts.shot_row(0, facts.num_frames, index=0, clip_index=0, detector="imported")


def story_windows(stories: list[list[int]], entries: list[Entry], shots: dict, shot_of_entry: dict[int, str],
                  scenes: int, result: ImportResult) -> tuple[list[CombinationRecord], list[AnnotationRecord]]:  # fmt: skip
    """Each story's windows of `scenes` consecutive imported shots as combinations with their captions
    (SFT JSON); stories too short, and windows with a failed or repeated shot, are reported in `result`."""
    combinations, annotations = [], []
    for story_index, story in enumerate(stories):
        if len(story) < scenes:
            if story:
                result.failures.append({"where": f"entry {story_index}", "path": "",
                                        "error": f"{len(story)} shots, fewer than --scenes {scenes}"})  # fmt: skip
            elif not any(f["where"] == f"entry {story_index}" for f in result.failures):
                result.failures.append({"where": f"entry {story_index}", "path": "", "error": "no 'values' list"})
            continue
        for start in range(len(story) - scenes + 1):
            window = story[start : start + scenes]
            if any(i not in shot_of_entry for i in window):
                continue  # a failed shot: its windows are skipped (the failure is already reported)
            shot_ids = [shot_of_entry[i] for i in window]
            if len(set(shot_ids)) < len(shot_ids):  # one file twice in a window: not a multi-shot sample
                result.notes.append(f"entry {story_index}: shots {start}-{start + scenes - 1} repeat one file; "
                                    "that window is skipped")  # fmt: skip
                continue
            combination_id = make_combination_id(shot_ids)
            video_id = shots[shot_ids[0]].video_id
            combinations.append(CombinationRecord(
                combination_id=combination_id, video_id=video_id, group=f"import-entry-{story_index}",
                shot_ids=shot_ids, total_frames=sum(shots[s].num_frames for s in shot_ids),
                embedder="imported", status=Status.OK,
            ))  # fmt: skip
            annotations.append(AnnotationRecord(
                combination_id=combination_id, video_id=video_id, shot_ids=shot_ids,
                captions=[entries[i].caption for i in window], characters=[], background=None,
                model=IMPORT_MODEL, status=Status.OK, requests=0,
            ))  # fmt: skip
    return combinations, annotations


def write_tables(output, tables: dict[str, Iterable[Record]]) -> None:
    """The import's one part per table (replacing an earlier import's); other tables lose theirs."""
    output.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        write_part(output, name, PART, sorted(rows, key=lambda r: r.values()[0]))
    for name in set(TABLES) - set(tables):
        (output / f"{name}.parquet" / f"part-{PART}.parquet").unlink(missing_ok=True)


def import_dataset(source: str | os.PathLike, output: str | os.PathLike, root: str | os.PathLike | None = None,
                   scenes: int = 3, allow_outside_root: bool = False) -> ImportResult:  # fmt: skip
    """Import `source` into the manifest directory `output`. Raises ImportFormatError for a wrong file."""
    if scenes < 1:
        raise ImportFormatError(f"--scenes must be at least 1, got {scenes}")
    source, output = location(source), location(output)
    base = location(root) if root is not None else source.parent
    kind, entries, stories = read_entries(source, location(root) if root is not None else None)
    result = ImportResult(kind)
    first_row: dict[str, Entry] = {}
    absolute = 0
    videos, shots, captions, probed = {}, {}, {}, {}
    shot_of_entry: dict[int, str] = {}

    def fail(entry: Entry, error: str) -> None:
        result.failures.append({"where": entry.where, "path": entry.path, "error": error})
        video_id = (
            path_id(entry.path)
            if entry.path
            else f"row-{hashlib.blake2b(entry.where.encode(), digest_size=8).hexdigest()}"
        )
        videos.setdefault(video_id, failed_video(entry.path, f"{source} {entry.where}: {error}", "import", video_id))

    for index, entry in enumerate(entries):
        if not entry.path:
            fail(entry, "no path (the row has no 'path'/'url' value)")
            continue
        if entry.caption is None:
            fail(entry, "no caption")
            continue
        if len(entry.caption) > MAX_CAPTION_CHARS:
            fail(entry, f"caption of {len(entry.caption)} characters (over {MAX_CAPTION_CHARS}): not a caption")
            continue
        named_absolute = entry.raw_absolute
        if not allow_outside_root and (root is not None or not named_absolute) and outside(entry.path, base):
            how = "an absolute path" if named_absolute else "a relative path through ../"
            fail(entry, f"{entry.path} is outside {'--root ' if root is not None else 'the folder of '}{base} "
                        f"({how}); pass --allow-outside-root to import it")  # fmt: skip
            continue
        if named_absolute and root is None:
            absolute += 1
        if kind != "sft-json" and entry.path in first_row:  # the same clip twice: the first row wins
            earlier = first_row[entry.path]
            same = "the same" if earlier.caption == entry.caption else "another"
            result.notes.append(f"{entry.where} names {entry.path} again ({same} caption); kept {earlier.where}")
            continue
        first_row.setdefault(entry.path, entry)
        if entry.path not in probed:
            try:
                probed[entry.path] = probe(entry.path)
            except ProbeError as err:
                probed[entry.path] = err
        facts = probed[entry.path]
        if isinstance(facts, ProbeError):
            fail(entry, str(facts))
            continue
        videos[facts.video_id] = facts.video_record(Status.OK, num_clips=1, num_shots=1)
        shot = whole_file_shot(facts)
        shots[shot.shot_id] = shot
        shot_of_entry[index] = shot.shot_id
        captions[shot.shot_id] = ShotCaptionRecord(shot_id=shot.shot_id, video_id=facts.video_id, caption=entry.caption,
                                                   model=IMPORT_MODEL, status=Status.OK, requests=0)  # fmt: skip

    if absolute:
        result.notes.append(f"{absolute} rows name absolute paths (imported as named; give --root to keep "
                            "every path inside one folder)")  # fmt: skip
    combinations, annotations = story_windows(stories, entries, shots, shot_of_entry, scenes, result)

    write_tables(output, {"videos": videos.values(), "shots": shots.values(), "shot_captions": captions.values(),
                          "combinations": combinations, "annotations": annotations})  # fmt: skip
    result.shots, result.combinations = len(shots), len(combinations)
    write_json_atomic(output / "import.json", {"source": str(source.resolve()), "format": kind, "scenes": scenes,
                                               "shots": result.shots, "combinations": result.combinations,
                                               "failures": result.failures})  # fmt: skip
    return result
