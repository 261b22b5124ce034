"""Summaries of a manifest directory: a text report and a browsable HTML page of keyframes."""

from __future__ import annotations

import html
import json
import os
import posixpath
from pathlib import Path

import numpy as np
import pandas as pd

from manifests.io import ManifestError, file_name, read_table, table_path, write_atomic
from manifests.schema import TABLES, Status
from manifests.store import ObjectPath, location

_BINS = [0, 1, 2, 4, 8, 16, 32, 64, float("inf")]


def length_histogram(durations: pd.Series) -> list[tuple[str, int]]:
    counts = pd.cut(durations, _BINS, right=False).value_counts(sort=False)
    labels = [f"{a:g}-{b:g}s" if b != float("inf") else f">={a:g}s" for a, b in zip(_BINS[:-1], _BINS[1:])]
    return list(zip(labels, counts.tolist()))


def check_manifest_dir(manifest_dir: str | os.PathLike) -> Path | ObjectPath:
    """The manifest folder (a local path or an object-store URL), or ManifestError when the path is
    not one (missing, a file, no tables)."""
    path = location(manifest_dir)
    if not path.exists():
        raise ManifestError(f"{path}: no such folder; give the --output folder of a curation run")
    if not path.is_dir():
        raise ManifestError(f"{path} is a file; give the --output folder of a curation run")
    if not any((path / f"{name}.parquet").exists() for name in TABLES):
        raise ManifestError(f"{path} holds no manifest tables (videos.parquet, shots.parquet, ...); is it the "
                            "--output folder of a curation run?")  # fmt: skip
    return path


def inconsistencies(manifest_dir: str | os.PathLike) -> list[str]:
    """What does not fit together: parts of uncommitted videos, missing tables, dangling references."""
    problems = []
    videos = read_table(manifest_dir, "videos", missing_ok=True)
    all_shots = read_table(manifest_dir, "shots", missing_ok=True, committed_only=False)
    committed = set(videos["video_id"])
    orphans = sorted(set(all_shots["video_id"]) - committed) if table_path(manifest_dir, "videos").exists() else []
    if orphans:
        problems.append(f"shots of {len(orphans)} video(s) without a committed videos row (a run stopped midway; "
                        "re-run curation): " + ", ".join(orphans[:5]))  # fmt: skip
    with_shots = videos[(videos["status"] == Status.OK) & (videos["num_shots"].fillna(0) > 0)]
    missing = sorted(set(with_shots["video_id"]) - set(all_shots["video_id"]))
    if missing:
        where = (
            "shots.parquet is missing" if not table_path(manifest_dir, "shots").exists() else "their shots are missing"
        )
        problems.append(f"{len(missing)} committed video(s) list shots but {where}; re-run curation to redo them")
    shot_ids = set(all_shots["shot_id"])
    combos = read_table(manifest_dir, "combinations", missing_ok=True)
    dangling = [c for c, ids in zip(combos["combination_id"], combos["shot_ids"]) if not set(ids) <= shot_ids]
    if dangling:
        problems.append(
            f"{len(dangling)} combination(s) name shots that are not in shots.parquet: " + ", ".join(dangling[:5])
        )
    notes = read_table(manifest_dir, "annotations", missing_ok=True)
    unknown = sorted(set(notes["combination_id"]) - set(combos["combination_id"]))
    if unknown:
        problems.append(f"{len(unknown)} annotation(s) of combinations that are not in combinations.parquet")
    return problems


def summary(manifest_dir: str | os.PathLike) -> dict:
    videos = read_table(manifest_dir, "videos", missing_ok=True)
    shots = read_table(manifest_dir, "shots", missing_ok=True)
    ok = videos[videos["status"] == Status.OK]
    durations = shots["duration_s"].astype(float)
    return {
        "videos": len(videos),
        "videos_ok": len(ok),
        "videos_failed": int((videos["status"] == Status.FAILED).sum()),
        "hours": float(ok["duration_s"].sum() / 3600) if len(ok) else 0.0,
        "shots": len(shots),
        "shots_ok": int((shots["status"] == Status.OK).sum()),
        "shots_filtered": int((shots["status"] == Status.FILTERED).sum()),
        "filtered_by": filtered_by(shots),
        "shot_seconds_percentiles": {f"p{q}": float(np.percentile(durations, q)) for q in (5, 25, 50, 75, 95)}
        if len(shots)
        else {},
        "shot_length_histogram": length_histogram(durations) if len(shots) else [],
        "failures": videos.loc[videos["status"] == Status.FAILED, ["source_path", "error_stage", "error"]].to_dict(
            "records"
        )
        + item_failures(manifest_dir, videos),
        "combinations": combination_counts(manifest_dir),
    }


def item_failures(manifest_dir, videos: pd.DataFrame) -> list[dict]:
    """Failed rows of the per-item tables (embeddings, annotations), one entry per video and error."""
    paths = dict(zip(videos["video_id"], videos["source_path"]))
    found = []
    for table, what in (("shot_embeddings", "shots"), ("annotations", "combinations"), ("shot_captions", "shots")):
        rows = read_table(manifest_dir, table, missing_ok=True)
        failed = rows[rows["status"] == Status.FAILED]
        for (video_id, stage, error), group in failed.groupby(["video_id", "error_stage", "error"], dropna=False):
            found.append({"source_path": paths.get(video_id, video_id), "error_stage": stage,
                          "error": f"{len(group)} {what} of {paths.get(video_id, video_id)} ({table}): {error}"})  # fmt: skip
    return found


def combination_counts(manifest_dir) -> dict:
    combos = read_table(manifest_dir, "combinations", missing_ok=True)
    ok = combos[combos["status"] == Status.OK]
    notes = read_table(manifest_dir, "annotations", missing_ok=True)
    statuses = notes[notes["combination_id"].isin(ok["combination_id"])]["status"].value_counts().to_dict()
    missing = len(ok) - sum(statuses.values())
    if missing > 0:
        statuses[Status.UNANNOTATED] = statuses.get(Status.UNANNOTATED, 0) + missing
    return {
        "total": len(combos),
        "ok": len(ok),
        "videos": int(ok["video_id"].nunique()),
        "embedder": str(combos["embedder"].iloc[0]) if len(combos) else None,
        "median_min_relevance": float(ok["min_relevance"].median()) if len(ok) else None,
        "annotations": {str(k): int(v) for k, v in statuses.items()},
    }


RELEVANCE_UNIT = "z-score: the pair's cosine against all pairs of its clip, in standard deviations"
ANNOTATE_HINT = "set GEMINI_API_KEY and re-run the same command to caption them (nothing else is redone)"


def annotation_line(counts: dict) -> str:
    """'captions: 2 ok, 1 unannotated (...)' for the ok combinations."""
    statuses = counts.get("annotations") or {}
    text = ", ".join(f"{n} {status}" for status, n in sorted(statuses.items())) or "none"
    hint = f"; {ANNOTATE_HINT}" if statuses.get(Status.UNANNOTATED) else ""
    return f"captions of the ok combinations: {text}{hint}"


def no_combinations_reason(manifest_dir) -> str:
    """Why the miner wrote nothing, from the last run's record: its groups and why each gave none."""
    run_json = location(manifest_dir) / "run.json"
    try:
        record = json.loads(run_json.read_text())
        mined = record["relevance"]["combinations"]
        scope = record["config"]["combine"].get("within", "clip")
    except (OSError, ValueError, KeyError, TypeError):
        return "no run.json says why; run the curation job (its combine stage mines them)"
    reasons = "; ".join(f"{n} {'group' if n == 1 else 'groups'}: {why}"
                        for why, n in sorted(mined.get("groups_without_combinations", {}).items()))  # fmt: skip
    hint = (" Shots are combined only within one clip; --within video mines across a video's clips, and a longer "
            "--clip-minutes gives each clip more shots") if scope == "clip" else ""  # fmt: skip
    return f"{mined.get('groups', 0)} groups mined ({scope}s), none gave a combination: {reasons or 'no groups'}.{hint}"


REASON_KINDS = (("a gradual transition", "transition"), ("shorter", "short"), ("darker", "dark"),
                ("static", "static"), ("active picture", "small picture"), ("text", "text"),
                ("duplicate", "duplicate"), ("aesthetic", "aesthetic"))  # fmt: skip


def reason_kind(reason: str) -> str:
    """A filter reason's kind (its filter), for counting: "static: motion 0.000 ..." -> "static"."""
    return next((kind for prefix, kind in REASON_KINDS if reason.startswith(prefix)), reason.split(" ")[0])


def filtered_by(shots: pd.DataFrame) -> dict[str, int]:
    """Filtered shots per filter, most first."""
    if not len(shots) or "filter_reason" not in shots:
        return {}
    reasons = shots.loc[shots["status"] == Status.FILTERED, "filter_reason"].dropna().astype(str)
    return reasons.map(reason_kind).value_counts().to_dict()


def signals_line(shot) -> str:
    """The shot's quality signals in one line: motion, active picture, text, repeat, aesthetics."""
    parts = []
    get = shot.get if isinstance(shot, dict) else lambda k, d=None: getattr(shot, k, d)
    motion = get("motion_mean")
    if motion is not None and motion == motion:
        unit = "px/frame" if get("motion_source") == "motion_vectors" else "luma/frame"
        parts.append(f"motion {motion:.2f} {unit}")
    box = [get(k) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
    if all(v is not None and v == v for v in box) and (box[2], box[3]) != (get("width"), get("height")):
        parts.append(f"picture {int(box[2])}x{int(box[3])} at ({int(box[0])}, {int(box[1])})")
    area = get("text_area")
    if area is not None and area == area and area > 0:
        parts.append(f"text {area:.1%}: " + "; ".join(list(get("text") if get("text") is not None else []))[:60])
    aesthetic = get("aesthetic")
    if aesthetic is not None and aesthetic == aesthetic:
        parts.append(f"aesthetic {aesthetic:.1f}")
    return " · ".join(parts)


def text_report(manifest_dir: str | os.PathLike) -> str:
    s = summary(manifest_dir)
    lines = [
        f"manifest: {location(manifest_dir).resolve()}",
        f"videos:   {s['videos']} ({s['videos_ok']} ok, {s['videos_failed']} failed), {s['hours']:.2f} h of video",
        f"shots:    {s['shots']} ({s['shots_ok']} ok, {s['shots_filtered']} filtered)",
    ]
    if s["filtered_by"]:
        lines.append("filtered by: " + ", ".join(f"{kind} {n}" for kind, n in s["filtered_by"].items()))
    if s["shot_seconds_percentiles"]:
        lines.append("shot length (s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["shot_seconds_percentiles"].items()))
        peak = max(count for _, count in s["shot_length_histogram"]) or 1
        for label, count in s["shot_length_histogram"]:
            lines.append(f"  {label:>9} {'#' * round(40 * count / peak):<40} {count}")
    c = s["combinations"]
    if c["total"]:
        lines.append(
            f"combinations: {c['ok']} ok of {c['total']} written, from {c['videos']} videos ({c['embedder']} "
            f"embeddings), median weakest-pair relevance {c['median_min_relevance'] or 0:.2f} ({RELEVANCE_UNIT})"
        )
        lines.append(f"  {annotation_line(c)}")
    else:
        lines.append(f"combinations: none ({no_combinations_reason(manifest_dir)})")
    if s["failures"]:
        lines.append(f"failures ({len(s['failures'])}):")
        lines += [f"  [{f['error_stage']}] {f['error']}" for f in s["failures"]]
    problems = inconsistencies(manifest_dir)
    if problems:
        lines.append(f"inconsistencies ({len(problems)}):")
        lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;background:#fafafa;color:#222}
h1{font-size:1.4rem} h2{font-size:1.05rem;margin:1.6rem 0 .4rem;word-break:break-all}
.stats{display:flex;gap:1rem;flex-wrap:wrap}.stat{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem .8rem}
.grid{display:flex;flex-wrap:wrap;gap:.5rem}.shot{background:#fff;border:1px solid #ddd;border-radius:6px;width:200px;font-size:.78rem}
.shot img{width:200px;height:auto;display:block;border-radius:6px 6px 0 0}.shot div{padding:.3rem .4rem}
.filtered{opacity:.45}.frame{position:relative}.crop{position:absolute;border:2px dashed #ffd400;box-sizing:border-box}.bar{background:#4a7fd6;height:.8rem;display:inline-block}
table{border-collapse:collapse;font-size:.85rem}td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:left}
.err{color:#b00020}
.status{font-weight:600}.badge{color:#fff;border-radius:9px;padding:0 .45rem;font-size:.75rem;font-weight:600}
.shot video{width:200px;height:auto;display:block;border-radius:6px 6px 0 0;background:#000}.note{font-size:.85rem;color:#444}.combo{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem;margin:.5rem 0}.combo .meta{font-size:.8rem;margin-bottom:.4rem}
"""


def html_report(
    manifest_dir: str | os.PathLike, out: str | os.PathLike | None = None, max_shots_per_video: int = 500,
    with_previews: bool = True, max_previews: int = 2000,
) -> Path | ObjectPath:  # fmt: skip
    """Write a self-contained page (images referenced relative to the manifest directory)."""
    manifest_dir = check_manifest_dir(manifest_dir)
    out = location(out) if out else manifest_dir / "index.html"
    s = summary(manifest_dir)
    videos = read_table(manifest_dir, "videos", missing_ok=True)
    shots = read_table(manifest_dir, "shots", missing_ok=True)
    rel = _relative(manifest_dir, out.parent)
    e = html.escape
    parts = [
        f"<!doctype html><meta charset=utf-8><title>Manifest {e(manifest_dir.name)}</title><style>{_STYLE}</style>"
    ]
    parts.append(f"<h1>Manifest {e(str(manifest_dir.resolve()))}</h1><div class=stats>")
    for label, value in [
        ("videos", f"{s['videos_ok']} ok / {s['videos']}"),
        ("hours of video", f"{s['hours']:.2f}"),
        ("shots", f"{s['shots_ok']} ok, {s['shots_filtered']} filtered"),
        ("median shot", f"{s['shot_seconds_percentiles'].get('p50', 0):.1f} s"),
        *[(f"filtered: {kind}", str(n)) for kind, n in s["filtered_by"].items()],
    ]:
        parts.append(f"<div class=stat><b>{e(value)}</b><br>{e(label)}</div>")
    parts.append("</div><h2>Shot length</h2><table>")
    peak = max([c for _, c in s["shot_length_histogram"]] or [1]) or 1
    for label, count in s["shot_length_histogram"]:
        parts.append(
            f"<tr><td>{e(label)}</td><td><span class=bar style='width:{300 * count / peak:.0f}px'></span> {count}</td></tr>"
        )
    parts.append("</table>")
    if s["failures"]:
        parts.append("<h2>Failures</h2><table><tr><th>file</th><th>stage</th><th>error</th></tr>")
        for f in s["failures"]:
            parts.append(
                f"<tr><td>{e(str(f['source_path']))}</td><td>{e(str(f['error_stage']))}</td><td class=err>{e(str(f['error']))}</td></tr>"
            )
        parts.append("</table>")
    ok_shots = shots[shots["status"] == Status.OK].sort_values(["video_id", "start_frame"]).head(max_previews)
    previews = write_previews(manifest_dir, ok_shots) if with_previews else {}
    parts += combinations_html(manifest_dir, shots, rel, previews=previews)
    for video in videos[videos["status"] == Status.OK].sort_values("source_path").itertuples():
        vshots = shots[shots["video_id"] == video.video_id].sort_values("start_frame")
        parts.append(
            f"<h2>{e(Path(video.source_path).name)} <small>({video.width}x{video.height}, {video.fps:.2f} fps, "
            f"{video.duration_s:.1f} s, {len(vshots)} shots, id {e(video.video_id)})</small></h2><div class=grid>"
        )
        for shot in vshots.head(max_shots_per_video).to_dict("records"):
            parts.append(shot_card(shot, previews.get(shot["shot_id"]), rel))
        parts.append("</div>")
    parts.append(_PLAY)
    # Replaced whole, never written through: a link planted at the page's path is replaced, not followed.
    write_atomic(out, lambda tmp: tmp.write_text("\n".join(parts)))
    return out


def shot_card(shot: dict, preview: str | None, rel: str) -> str:
    """A shot on the page: keyframe (the active picture outlined) or preview, times, its signals,
    why it is filtered, and a link to the shot it repeats."""
    e = html.escape
    keyframe = shot.get("keyframe_path")
    image = f"<img loading=lazy src='{e(f'{rel}/{keyframe}')}' alt=''>" if isinstance(keyframe, str) else ""
    box = [shot.get(k) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
    width, height = shot.get("width"), shot.get("height")
    if image and not preview and all(v is not None and v == v for v in box) and (box[2], box[3]) != (width, height):
        x, y, w, h = (100 * v / d for v, d in zip(box, (width, height, width, height)))
        image += (f"<span class=crop style='left:{x:.2f}%;top:{y:.2f}%;width:{w:.2f}%;height:{h:.2f}%'"
                  " title='active picture'></span>")  # fmt: skip
    cls = "shot filtered" if shot["status"] != Status.OK else "shot"
    reason = shot["filter_reason"] if isinstance(shot.get("filter_reason"), str) else ""
    title = f" title='{e(reason)}'" if reason else ""
    signals = signals_line(shot)
    original = shot.get("duplicate_of")
    repeat = f"<br>repeats <a href='#{e(original)}'>{e(original)}</a>" if isinstance(original, str) else ""
    why = f"<br><span class=err>{e(reason)}</span>" if reason else ""
    return (f"<div id='{e(str(shot['shot_id']))}' class='{cls}'{title}><div class=frame>{preview_tag(preview, image, rel)}"
            f"</div><div>shot_index {shot['shot_index']} · {shot['start_s']:.2f}–{shot['end_s']:.2f} s "
            f"({shot['duration_s']:.1f} s)<br>frames [{shot['start_frame']}, {shot['end_frame']})"
            f"{'<br>' + e(signals) if signals else ''}{repeat}{why}</div></div>")  # fmt: skip


def _relative(target, start) -> str:
    """How a page in `start` refers to `target`: a relative path where both are in one store (or both
    local), else `target`'s own address."""
    if isinstance(target, ObjectPath) and isinstance(start, ObjectPath) and target.url[:5] == start.url[:5]:
        return posixpath.relpath(target.key, start.key)
    if isinstance(target, ObjectPath) or isinstance(start, ObjectPath):
        return str(target)
    return os.path.relpath(target, start)


BADGE_COLOURS = {"ok": "#2e7d32", "unannotated": "#777", "failed": "#b00020", "error": "#b00020",
                 "invalid": "#c77700", "blocked": "#c77700", "truncated": "#c77700"}  # fmt: skip


def badge(status: str, detail: str = "") -> str:
    """A compact status badge; the long detail (an error, a hint) is its tooltip, not repeated text."""
    e = html.escape
    colour = BADGE_COLOURS.get(status, "#555")
    title = f" title='{e(detail[:500])}'" if detail else ""
    return f"<span class=badge style='background:{colour}'{title}>{e(status)}</span>"


PREVIEW_FRAMES, PREVIEW_SIDE, PREVIEW_FPS = 8, 160, 4.0


def write_previews(manifest_dir: Path, shots: pd.DataFrame) -> dict[str, str]:
    """A short low-resolution clip of each shot (8 frames across it, 160 px, 4 fps, H.264), written
    once next to the keyframes (keyframes/previews/) and reused; shot_id -> path relative to the
    manifest. A shot whose source cannot be read simply has no preview."""
    from manifests.frames import VideoReadError, read_shot_frames
    from manifests.media import write_mp4
    from manifests.sampling import sample_indices

    folder, found = manifest_dir / "keyframes" / "previews", {}
    for shot in shots.to_dict("records"):
        relative = f"keyframes/previews/{file_name(str(shot['shot_id']))}.mp4"
        target = manifest_dir / relative
        if not target.is_file():
            try:
                frames = read_shot_frames(shot, indices=sample_indices(int(shot["num_frames"]), PREVIEW_FRAMES),
                                         max_side=PREVIEW_SIDE, crop=True)  # fmt: skip
            except (VideoReadError, OSError, ValueError):
                continue
            folder.mkdir(parents=True, exist_ok=True)
            write_mp4(target, frames, PREVIEW_FPS, crf=30)
        found[shot["shot_id"]] = relative
    return found


def preview_tag(relative: str | None, image: str, rel: str) -> str:
    """The keyframe, or a muted looping preview with the keyframe as its poster (plays on hover or tap)."""
    if not relative:
        return image
    e = html.escape
    poster = image.split("src='", 1)[1].split("'", 1)[0] if "src='" in image else ""
    return (f"<video class=preview muted loop playsinline preload=none poster='{poster}' "
            f"src='{e(f'{rel}/{relative}')}'></video>")  # fmt: skip


_PLAY = ("<script>for(const v of document.querySelectorAll('video.preview')){"
         "v.addEventListener('mouseenter',()=>v.play());v.addEventListener('mouseleave',()=>v.pause());"
         "v.addEventListener('click',()=>v.paused?v.play():v.pause())}</script>")  # fmt: skip


def combinations_html(manifest_dir, shots: pd.DataFrame, rel: str, limit: int = 300,
                      previews: dict[str, str] | None = None) -> list[str]:  # fmt: skip
    """Each combination as a row of its shots' keyframes: which video and shots, each pair's score,
    its annotation status, and the captions once annotated."""
    combos = read_table(manifest_dir, "combinations", missing_ok=True)
    if not len(combos):
        return []
    previews = previews or {}
    e = html.escape
    by_id = shots.set_index("shot_id")
    videos = read_table(manifest_dir, "videos", missing_ok=True)
    names = {v: Path(p).name for v, p in zip(videos["video_id"], videos["source_path"])}
    notes = read_table(manifest_dir, "annotations", missing_ok=True)
    annotation = {row.combination_id: row for row in notes.itertuples()}
    ordered = combos.sort_values(["status", "min_relevance"], ascending=[True, False]).head(limit)
    parts = [f"<h2>Shot combinations ({int((combos['status'] == 'ok').sum())} ok, showing {len(ordered)})</h2>",
             f"<p class=note>Relevance: {e(RELEVANCE_UNIT)}. {e(annotation_line(combination_counts(manifest_dir)))}."
             " Shots are counted 1 to N within a combination (pairs 1 & 2, ...); shot_index is a shot's 0-based"
             " position in its video; frame spans are half-open, [first, end). Hover a badge for its detail; hover or"
             " tap a shot to play it.</p>"]  # fmt: skip
    for combo in ordered.itertuples():
        cls = "combo" if combo.status == Status.OK else "combo filtered"
        numbers = [str(int(by_id.loc[s, "shot_index"])) if s in by_id.index else "?" for s in combo.shot_ids]
        n = len(combo.shot_ids)
        pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]  # the order pair_scores are stored in
        scores = ", ".join(f"{i + 1} & {j + 1}: {raw:.2f} (z {z:.2f})"
                           for (i, j), raw, z in zip(pairs, combo.pair_scores, combo.pair_calibrated))  # fmt: skip
        note = annotation.get(combo.combination_id)
        status = Status.UNANNOTATED if note is None else str(note.status)
        detail = note.error if note is not None and isinstance(note.error, str) else ""
        reason = combo.filter_reason if isinstance(combo.filter_reason, str) else ""
        parts.append(
            f"<div class='{cls}'><div class=meta><b>{e(names.get(combo.video_id, combo.video_id))}</b> shot_index "
            f"{e(' → '.join(numbers))} · weakest pair {combo.min_relevance:.2f} (z) · pairs {e(scores)} · "
            f"{combo.total_frames} frames · captions {badge(status, detail)} {e(reason)}</div><div class=grid>"
        )
        captions = list(note.captions) if note is not None and note.status == Status.OK else []
        for i, shot_id in enumerate(combo.shot_ids):
            path = by_id.loc[shot_id, "keyframe_path"] if shot_id in by_id.index else None
            image = f"<img loading=lazy src='{e(f'{rel}/{path}')}' alt=''>" if isinstance(path, str) else ""
            start, end = (
                (by_id.loc[shot_id, "start_s"], by_id.loc[shot_id, "end_s"]) if shot_id in by_id.index else (0, 0)
            )
            caption = f"<br><i>{e(captions[i])}</i>" if i < len(captions) else ""
            media = preview_tag(previews.get(shot_id), image, rel)
            parts.append(f"<div class=shot>{media}<div>shot {i + 1} of {n} (shot_index {e(numbers[i])}): {start:.1f}–{end:.1f} s"
                         f"{caption}</div></div>")  # fmt: skip
        parts.append("</div></div>")
    return parts
