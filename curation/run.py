"""Curation job: long videos → 10-minute clips → shots → Parquet manifests.

    python curation/run.py --input VIDEOS... --output DIR
    ray job submit --working-dir . -- python curation/run.py --input ... --output DIR

Connects to the cluster in RAY_ADDRESS when set (as `ray job submit` does), else starts a local
Ray. Without --input it generates a few sample videos and curates those.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import importlib.metadata
import logging
import os
import platform
import signal
import time

import yaml
from pydantic import ValidationError

from curation.config import CurationConfig, add_flags, flags, from_flags
from curation.inputs import resolve_inputs
from curation.samples import write_sample_videos
from manifests.io import OUTPUT_FULL, ensure_tables, read_table, write_json_atomic
from manifests.schema import Status
from manifests.store import ObjectPath, is_url, location

log = logging.getLogger("curation")

# The job's stages, in the order of the paper's data pipeline (Figure 4). The first five stream
# video by video on one executor (curation/stage.py, curation/pipeline.py); the last two work on
# the whole manifest.
STAGES = (
    "probe: content fingerprint, stream facts, PTS of every frame (curation/probe.py; Ray task per video)",
    "split: 10-minute clip windows with overlap (curation/split.py; driver)",
    "detect: PySceneDetect cuts per clip window; the same decode pass keeps keyframes and each shot's "
    "embedding frames (curation/detect.py, shot_frames.py; Ray task per clip)",
    "reconcile: merge cuts on the source timeline, shots.parquet, keyframes (curation/reconcile.py; driver)",
    "embed: shot embeddings from the kept frames (curation/embed.py; Ray actors, model loaded once, GPU when present)",
    "combine: relevance-filtered ordered shot combinations per clip, combinations.parquet "
    "(curation/combine.py; driver)",
    "annotate: Gemini captions per combination (curation/annotate.py; media cut in Ray tasks, requests "
    "rate-limited from the driver)",
)


USAGE = "usage: python curation/run.py --input VIDEOS... --output DIR [options]   (--help lists every option)"


class Parser(argparse.ArgumentParser):
    """A mistake is one short usage line and the error last, not 30 lines of usage."""

    def error(self, message: str):
        self.exit(2, f"{USAGE}\nerror: {message}\n")


def unknown_flag(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """'unknown flag --outptu (did you mean --output?)' for the first flag the parser does not know."""
    import difflib

    known = [o for o in parser._option_string_actions if o.startswith("--")]
    for token in argv:
        if token.startswith("--") and token.split("=", 1)[0] not in known:
            flag = token.split("=", 1)[0]
            close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
            return f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else "")
    return None


def in_ray_job() -> bool:
    """Whether this process is a `ray job submit` entrypoint (it runs in Ray's copy of --working-dir)."""
    return "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ or "runtime_resources/working_dir_files" in os.getcwd()


def relative_paths_in_a_job(config: CurationConfig, config_file: Path | None) -> list[str]:
    """Under a Ray job, relative paths would point into Ray's temporary copy of the code (and an
    output written there vanishes with the job): each is refused with the absolute path to give."""
    if not in_ray_job():
        return []
    named = [("--output", config.output)] + [("--input", p) for p in config.inputs]
    named += [("--config", config_file)] if config_file else []
    return [f"{flag} {path} is relative, and this job runs in Ray's temporary copy of --working-dir ({os.getcwd()}), "
            f"so it would point in there (an output written there vanishes with the job); give the absolute path "
            f"on storage every node sees, e.g. {flag} /shared/{Path(path).name}"
            for flag, path in named if path is not None and not location(path).is_absolute()]  # fmt: skip


def parse_args(argv: list[str] | None = None) -> CurationConfig:
    """Flags derived from the config's fields (curation/config.py), optionally over a YAML file."""
    parser = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, metavar="YAML",
                        help="a config file (the tree run.json records under 'config'); flags override it")  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true")
    add_flags(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    problem = unknown_flag(parser, argv)
    if problem:
        parser.error(problem)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    base = {}
    if args.config is not None:
        try:
            base = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            parser.error(f"--config {args.config}: cannot read it as YAML ({err})")
        if not isinstance(base, dict):
            parser.error(f"--config {args.config}: expected sections (shots:, embed:, ...), got {type(base).__name__}")
    try:
        config = from_flags(args, base)
    except ValidationError as err:
        parser.error("; ".join(_flag_message(e) for e in err.errors()))
    problems = relative_paths_in_a_job(config, args.config)
    if problems:
        parser.error("; ".join(problems))
    return config


def _flag_message(error: dict) -> str:
    """'--flag: what is wrong' for a field error; a whole-config check names its flags itself."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message
    field = ".".join(map(str, error["loc"]))
    if error["type"] == "extra_forbidden":  # a YAML key that is no field: say which one was meant
        import difflib

        options = [".".join(k.split(".")[: len(error["loc"])]) for k in flags()]
        close = difflib.get_close_matches(field, sorted(set(options)), n=1, cutoff=0.6)
        return f"{field} (in --config): unknown key" + (f" (did you mean {close[0]}?)" if close else "")
    known = flags()
    if field in known:
        return f"{known[field]}: {message}"
    return f"{field} (in --config): {message}"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("av", "scenedetect", "opencv-python", "ray", "pyarrow", "pandas", "numpy", "pydantic", "torch",
                    "google-genai"):  # fmt: skip
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def write_run_json(config: CurationConfig, summary, paths: list[str], relevance: dict, total_s: float = 0.0) -> dict:
    videos = read_table(config.output, "videos", missing_ok=True)
    shots = read_table(config.output, "shots", missing_ok=True)
    ok_videos = videos[videos["status"] == Status.OK]
    record = {
        "config": config.model_dump(mode="json"),
        "versions": versions(),
        "stages": list(STAGES),
        "this_run": {
            "inputs": len(paths),
            "videos_ok": summary.videos_ok,
            "videos_failed": summary.videos_failed,
            "videos_skipped_already_done": summary.videos_skipped,
            "duplicate_inputs": summary.duplicates,
            "clips": summary.clips,
            "shots": summary.shots,
            "hours_processed": summary.hours_processed,
            "frames_decoded": summary.frames_decoded,
            "wall_seconds": summary.wall_seconds,
            "detect_task_seconds": summary.detect_task_seconds,
            "x_real_time": summary.hours_processed * 3600 / summary.wall_seconds if summary.wall_seconds else 0.0,
            "failures": summary.failures,
        },
        "manifest": {
            "videos": int(len(videos)),
            "videos_ok": int(len(ok_videos)),
            "videos_failed": int((videos["status"] == Status.FAILED).sum()),
            "hours": float(ok_videos["duration_s"].sum() / 3600),
            "shots": int(len(shots)),
            "shots_ok": int((shots["status"] == Status.OK).sum()),
            "shots_filtered": int((shots["status"] == Status.FILTERED).sum()),
        },
        "relevance": relevance,
        "seconds": {
            "total": total_s,  # the whole job: start-up, every stage, writing
            "shots": summary.wall_seconds,  # wall time of the streamed stages: probe … reconcile, embed
            # time inside the Ray workers, summed over workers (the stages overlap in wall time)
            "probe_tasks": summary.stage_seconds.get("probe", 0.0),
            "detect_tasks": summary.stage_seconds.get("detect", 0.0),
            "embed_tasks": summary.stage_seconds.get("embed", 0.0),
            "embed": relevance["embedding"]["seconds"],
            "combine": relevance["combinations"]["seconds"],
            "annotate": sum(t.get("seconds", 0.0) for k, t in relevance["annotation"].items() if k != "total"),
        },
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json_atomic(config.output / "run.json", record)
    return record


def annotation_line(report: dict) -> str:
    lines = []
    for what, r in report.items():
        if what == "total":
            continue
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(r["statuses"].items())) or "nothing to annotate"
        tokens = r["prompt_tokens"] + r["output_tokens"] + r["thinking_tokens"]
        lines.append(f"annotation ({what}): {statuses}; {r['requests']} requests and {tokens} tokens this run "
                     f"({r['thinking_tokens']} thinking), {r['cache_hits']} from cache")  # fmt: skip
        if r["note"]:
            lines.append(f"  {r['note']}")
    total = report.get("total")
    if total and total["requests"]:
        cost = total["estimated_cost_usd"]
        lines.append(f"annotation spend this run: {total['requests']} requests, "
                     + (f"about ${cost:.4f}" if cost is not None else "no price known (--gemini-price)"))  # fmt: skip
    return "\n".join(lines)


def run_combine(config: CurationConfig) -> dict:
    """The combine stage: mine combinations over the whole manifest (cheap: per clip, on the driver)."""
    from curation.combine import mine
    from curation.embed import expected_identity
    from manifests.io import remove_part, table_video_ids, write_part

    began = time.perf_counter()
    name, checkpoint_hash = expected_identity(config.embed)
    embeddings = read_table(config.output, "shot_embeddings", missing_ok=True)
    same = embeddings["checkpoint_hash"].fillna("") == (checkpoint_hash or "")
    if name is not None:
        same &= embeddings["embedder"] == name
    shots = read_table(config.output, "shots", missing_ok=True)
    combos, stats = mine(shots, embeddings[same], config.combine)
    stale = table_video_ids(config.output, "combinations")
    for video_id, rows in combos.groupby("video_id") if len(combos) else []:
        write_part(config.output, "combinations", video_id, rows)
        stale.discard(video_id)
    # Only videos that were mined again and now yield nothing lose their combinations (stricter
    # thresholds); a video whose shots are missing keeps everything derived from it.
    for video_id in stale & set(shots["video_id"]):
        remove_part(config.output, "combinations", video_id)
        remove_part(config.output, "annotations", video_id)  # their captions would dangle
    return stats.as_dict() | {"seconds": time.perf_counter() - began}


def unreachable_store(config: CurationConfig) -> str | None:
    """Said at the door: an object-store --output or --input the store will not serve (no credentials,
    no such bucket, no endpoint), with what to set. Credentials are never printed."""
    for flag, where in [("--output", config.output), *(("--input", p) for p in config.inputs)]:
        if not isinstance(where, ObjectPath):
            continue
        bucket = ObjectPath(where.url.split("://", 1)[0] + "://" + where.key.split("/", 1)[0])
        try:
            if not bucket.exists():
                return f"{flag} {where}: bucket {bucket} does not exist (or these credentials cannot see it); create it"
        except Exception as err:  # botocore's NoCredentialsError, an endpoint that refuses, a missing library
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
            return (f"{flag} {where}: the store cannot be reached ({type(err).__name__}: {err}); set credentials "
                    "the standard way (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role) "
                    "and, for a server other than AWS (MinIO, R2, ...), AWS_ENDPOINT_URL"
                    + (f" (now {endpoint})" if endpoint else ""))  # fmt: skip
    return None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The job, with the ways it can stop early turned into one clear line each."""
    from curation.local_ray import MemoryLimitError
    from manifests.lock import OutputLocked

    try:
        return run(argv)
    except (OutputLocked, MemoryLimitError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; re-run the same command to resume (finished videos are kept)", file=sys.stderr)
        return 130
    except OSError as err:
        if err.errno not in OUTPUT_FULL:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"error: {err.strerror}{where}: free space (or fix the output folder) and re-run the same command "
              "to resume; nothing half-written is kept", file=sys.stderr)  # fmt: skip
        return 1


def run(argv: list[str] | None = None) -> int:
    from curation.gemini import api_key_held_apart
    from manifests.lock import OutputLock

    began = time.perf_counter()
    config = parse_args(argv)
    problem = unreachable_store(config)
    if problem:
        print(f"{USAGE}\nerror: {problem}", file=sys.stderr)
        return 2
    try:
        config.output.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError, PermissionError) as err:
        blocking = next((p for p in [config.output, *config.output.parents] if p.exists() and not p.is_dir()), None)
        why = f"{blocking} is a file, not a folder" if blocking else err.strerror
        print(f"{USAGE}\nerror: --output {config.output}: {why}; give a folder", file=sys.stderr)
        return 2
    # The key leaves the environment before Ray starts (no Ray process inherits it); one job per
    # output folder: a second one is refused.
    with api_key_held_apart() as api_key, OutputLock(config.output, "curation job"):
        return curate(config, api_key, began)


def curate(config: CurationConfig, api_key: str | None, began: float) -> int:
    """The job on a locked output folder."""
    if not config.inputs:
        sample_dir = config.output / "sample_videos"
        print(f"no --input given: generating {config.sample_videos} sample videos in {sample_dir}", file=sys.stderr)
        write_sample_videos(sample_dir, count=config.sample_videos)
        config.inputs = [sample_dir]
    input_problems: list[tuple[str, str]] = []
    paths = resolve_inputs(config.inputs, input_problems)
    if input_problems:
        from curation.reconcile import commit_failure

        for path, reason in input_problems:
            commit_failure(path, reason, "inputs", config)
            print(f"warning: {reason}", file=sys.stderr)
    if not paths:
        print(f"error: no video files found in {', '.join(map(str, config.inputs))}", file=sys.stderr)
        return 2
    missing = [p for p in paths if not is_url(p) and not os.path.exists(p)]  # stored ones: checked by the probe
    for path in missing:  # said at once, before Ray starts; each still becomes a failed row
        print(f"warning: --input {path}: file not found", file=sys.stderr)
    if len(missing) == len(paths):
        print("error: none of the --input paths exists; nothing to do", file=sys.stderr)
        return 2
    from curation.local_ray import forget, record_processes, start_ray

    started = start_ray(config.num_cpus, config.output)  # a killed earlier run's Ray processes are cleared first
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's SIGTERM stops the job like Ctrl-C
    from dataclasses import asdict

    from curation.annotate import run_annotation
    from curation.pipeline import run_pipeline

    summary, embedding = run_pipeline(paths, config)  # probe → split → detect → reconcile → embed
    if started:
        record_processes(config.output)  # Ray's agents and workers started since
    combinations = run_combine(config)
    annotation = run_annotation(config.output, config.annotate, api_key=api_key)
    relevance = {"embedding": asdict(embedding), "combinations": combinations, "annotation": annotation}
    ensure_tables(config.output)  # every table exists with its schema, empty when nothing qualified
    record = write_run_json(config, summary, paths, relevance, time.perf_counter() - began)
    manifest = record["manifest"]
    print(
        f"done: {summary.videos_ok} videos curated, {summary.videos_skipped} already done, "
        f"{summary.videos_failed} failed; manifest holds {manifest['shots']} shots "
        f"({manifest['shots_ok']} ok) from {manifest['hours']:.2f} h of video in {config.output}\n"
        f"{relevance['combinations']['combinations_ok']} shot combinations ({relevance['embedding']['embedder']} "
        f"embeddings)\n{annotation_line(relevance['annotation'])}\n"
        f"inspect: python -m manifests inspect {config.output} --html"
    )
    if started:
        forget(config.output)  # a clean end: Ray stops with this process
    if summary.videos_ok + summary.videos_skipped + summary.duplicates == 0:
        reasons = "; ".join(f["error"] for f in summary.failures[:5])
        print(f"error: no video could be processed: {reasons}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
