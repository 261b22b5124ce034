"""The shot settings an output's tables were made with: recorded, compared at the door, re-derived on request.

A re-run into an existing --output resumes: videos already curated are skipped. That is only right
while the settings that shape their shots (the detector, its thresholds, the clip windows, the shot
filters) are the ones the tables were made with. So the output records them in
`shot_settings.json`; a re-run with other values is refused with the differences, unless
`--redo-shots` asks for every curated video to be re-derived with the new ones (re-detected,
re-filtered, re-embedded; combine re-mines, and captions of combinations that come out the same
are served from the reply cache). Refusing is the default because re-deriving re-decodes every
video (the job's slowest work) and replaces shots that captions may already describe: that is
the user's call, not a side effect of a changed flag.

Settings that change speed but not rows (threads, CPUs, GPUs per task, clips in pieces) are not recorded. Embedding,
combination and annotation settings need no record: those stages already redo what their
settings change (a new embedder embeds every shot, combine re-mines on every run, captions are
keyed by their prompt and media).
"""

from __future__ import annotations

import json

from curation.config import CurationConfig, flags
from manifests.io import read_table, write_json_atomic

FILE = "shot_settings.json"
SPEED_ONLY = frozenset({"decode_threads", "cpus_per_task", "gpus_per_task", "piece_min_seconds"})


class SettingsChanged(RuntimeError):
    """The shot settings differ from those the output was curated with; the message says which, and what to do."""


def shot_settings(config: CurationConfig) -> dict:
    """The settings that shape the shots, clips and their embeddings' inputs (the `shots` section, less speed knobs)."""
    return _shaping(config.shots.model_dump(mode="json"))


def _shaping(shots: dict) -> dict:
    return {k: v for k, v in shots.items() if k not in SPEED_ONLY}


def differences(recorded: dict, current: dict) -> list[str]:
    """'--detector: adaptive (recorded) -> transnetv2 (now)' for each differing setting, named by its flag."""
    named = flags()
    before, now = _flat(recorded), _flat(current)
    return [f"{named.get(f'shots.{key}', key)}: {before.get(key)} (recorded) -> {now.get(key)} (now)"
            for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]  # fmt: skip


def _flat(settings: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def read_record(config: CurationConfig) -> dict | None:
    """The output's record, or None for an output without one. An output made before the record
    existed adopts the settings its run.json names (the last run's, which its rows then reflect)."""
    path = config.output / FILE
    if path.exists():
        return json.loads(path.read_text())
    run_json = config.output / "run.json"
    if run_json.exists():
        try:
            shots = json.loads(run_json.read_text())["config"]["shots"]
        except (KeyError, TypeError, ValueError):
            return None
        return {"settings": _shaping(shots), "pending": []}
    return None


def curated_video_ids(config: CurationConfig) -> list[str]:
    videos = read_table(config.output, "videos", missing_ok=True, columns=["video_id"])
    return sorted(videos["video_id"])


def check(config: CurationConfig) -> list[str]:
    """At the door, before any work: returns the video ids to re-derive in this run (those still pending
    from a re-derivation an earlier run began). Raises SettingsChanged when the settings differ and
    --redo-shots was not given; with it, every curated video becomes pending and the record is rewritten."""
    current = shot_settings(config)
    record, curated = read_record(config), curated_video_ids(config)
    if record is None or not curated:  # a new output: these settings make its rows
        write_json_atomic(config.output / FILE, {"settings": current, "pending": []})
        return []
    changed = differences(record["settings"], current)
    if changed and not config.redo_shots:
        raise SettingsChanged(
            f"--output {config.output} was curated with other shot settings: {'; '.join(changed)}. Its shots, "
            "clips, embeddings and combinations reflect the recorded ones, so resuming would mix the two. Re-run "
            "with --redo-shots to re-derive every curated video with the new settings (re-detect, re-filter, "
            "re-embed, re-mine; captions of unchanged combinations come from the reply cache), or give a new --output"
        )
    pending = sorted(set(record.get("pending", [])) | (set(curated) if changed else set()))
    write_json_atomic(config.output / FILE, {"settings": current, "pending": pending})
    return pending


def settle(config: CurationConfig, pending: list[str], rederived: set[str]) -> list[str]:
    """After a run (finished or interrupted): the videos it re-derived are no longer pending. Returns the rest."""
    left = sorted(set(pending) - rederived)
    if left != sorted(pending):
        write_json_atomic(config.output / FILE, {"settings": shot_settings(config), "pending": left})
    return left
