"""Remove videos from a manifest: each one's rows in every table, committed at once, and its keyframes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from manifests.io import inside, read_table, table_path, write_batch
from manifests.schema import TABLES
from manifests.store import location


@dataclass
class Removal:
    removed: dict[str, str] = field(default_factory=dict)  # video id -> its source path
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows removed
    keyframes: int = 0
    unknown: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"removed {len(self.removed)} video(s): " + ", ".join(f"{v} ({p})" for v, p in self.removed.items())]
        lines.append("rows removed: " + (", ".join(f"{n} {t}" for t, n in self.rows.items() if n) or "none"))
        lines.append(f"keyframes removed: {self.keyframes}")
        lines += [f"not in this manifest: {u}" for u in self.unknown]
        return lines


def remove_videos(manifest_dir: str | os.PathLike, selectors: list[str]) -> Removal:
    """Each selector is a video_id or a source_path as the videos table records it. All of their rows
    leave every table in one commit (the job's own: a batch covering the videos with no rows, its
    videos part last), so a reader sees them whole or gone; a removal cut short is finished by running
    it again. Hold the output's lock (the job must not run meanwhile)."""
    root = location(manifest_dir)
    videos = read_table(root, "videos", columns=["video_id", "source_path"])
    by_path = dict(zip(videos["source_path"], videos["video_id"]))
    known = set(videos["video_id"])
    result = Removal()
    for selector in selectors:
        video = selector if selector in known else by_path.get(selector)
        if video is None:
            result.unknown.append(selector)
        else:
            result.removed[video] = str(videos.loc[videos["video_id"] == video, "source_path"].iloc[0])
    if not result.removed:
        return result
    ids = sorted(result.removed)
    keyframes = []
    for name in TABLES:
        if not table_path(root, name).is_dir():
            continue
        columns = ["video_id", "keyframe_path"] if name == "shots" else ["video_id"]  # not the embeddings themselves
        rows = read_table(root, name, missing_ok=True, columns=columns)
        mine = rows[rows["video_id"].isin(ids)]
        result.rows[name] = len(mine)
        if name == "shots":
            keyframes = [k for k in mine["keyframe_path"].dropna() if k]
    write_batch(root, {name: [] for name in TABLES if table_path(root, name).is_dir()}, ids)
    for relative in keyframes:
        path = inside(root, relative) if isinstance(root, Path) else root / relative
        if path is not None and path.exists():  # only files inside the manifest, never through a link out of it
            path.unlink()
            result.keyframes += 1
    return result
