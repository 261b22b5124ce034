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

from curation import identity
from curation.aesthetic import low_aesthetic
from curation.bars import picture_too_small
from curation.config import CurationConfig, add_flags, flags, from_flags
from curation.darkness import too_dark
from curation.driver import Driver, RunSummary, VideoTask, record_failure
from curation.duplicates import duplicate
from curation.inputs import LIST_SUFFIXES, VIDEO_SUFFIXES, resolve_inputs
from curation.measures import Measure, declared
from curation.motion import static
from curation.samples import write_sample_videos
from curation.shot_filters import gradual_transition, too_short
from curation.stage import Stage
from curation.text import overlay
from manifests.hints import did_you_mean
from manifests.io import OUTPUT_FULL, ensure_tables, read_table, write_json_atomic
from manifests.schema import Status
from manifests.store import ObjectPath, is_url, location

log = logging.getLogger("curation")

USAGE = "usage: python curation/run.py --input VIDEOS... --output DIR [options]   (--help lists every option)"


class Parser(argparse.ArgumentParser):
    """A mistake is one short usage line and the error last, not 30 lines of usage."""

    def error(self, message: str):
        self.exit(2, f"{USAGE}\nerror: {message}\n")


def unknown_flag(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """'unknown flag --outptu (did you mean --output?)' for the first flag the parser does not know."""
    known = [o for o in parser._option_string_actions if o.startswith("--")]
    for token in argv:
        if token.startswith("--") and token.split("=", 1)[0] not in known:
            flag = token.split("=", 1)[0]
            return f"unknown flag {flag}" + did_you_mean(flag, known)
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
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also log each video as it is committed (clips, shots), duplicates, retries and "
                             "where each stage's time goes")  # fmt: skip
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
        options = [".".join(k.split(".")[: len(error["loc"])]) for k in flags()]
        return f"{field} (in --config): unknown key" + did_you_mean(field, options)
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


def write_run_json(
    config: CurationConfig, driver: Driver, paths: list[str], total_s: float = 0.0, pending: list[str] = ()
) -> dict:
    from dataclasses import asdict

    relevance = {"embedding": asdict(driver.stage("embed").report), "combinations": driver.stage("combine").report,
                 "annotation": driver.stage("annotate").report}  # fmt: skip
    videos = read_table(config.output, "videos", missing_ok=True)
    shots = driver.table("shots")  # the run's one read of shots since embedding, shared with combine and annotate
    ok_videos = videos[videos["status"] == Status.OK]
    summary = driver.summary
    record = {
        "config": config.model_dump(mode="json"),
        # The shot settings hold for every video but these (not among this run's inputs while being re-derived).
        "shot_settings_pending_videos": list(pending),
        "versions": versions(),
        "stages": [f"{stage.name}: {stage.about} ({stage.module.replace('.', '/')}.py)" for stage in driver.stages],
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


# The shot filters, in order (the first reason wins): each judges a shot by its evidence
# (curation/shot_filters.py) and returns why it is filtered, or None. Those in PASS_FILTERS
# judge by the detection pass alone; the text stage reads only the shots they keep.
PASS_FILTERS = [gradual_transition, too_short, too_dark, static, picture_too_small]
SHOT_FILTERS = [*PASS_FILTERS, overlay, low_aesthetic, duplicate]


def job_measures(config: CurationConfig) -> list[Measure]:
    """The measurements the detection pass takes: those the job's filters declare, in the order
    first declared (motion reads the active picture the bars measure finds)."""
    return declared(SHOT_FILTERS, config)


def pipeline(
    config: CurationConfig,
    api_key: str | None = None,
    swap: dict[str, type] | None = None,
    redo: frozenset = frozenset(),
) -> list[Stage]:
    """The job's stages, in the order of the paper's data pipeline (Figure 4). Each is a `Stage` in
    the module of its name; the driver (curation/driver.py) moves every video through them.

    A shot filter (darkness, motion, ...) is a module with its measure and an entry of `SHOT_FILTERS`
    (the detection pass takes the measures the filters declare); reconcile applies that list, the pass
    models (text) the pass's part of it. `swap`
    replaces a stage's remote part by name ("probe", "detect", "embed", "media", "caption"): tests use it to crash
    workers. `redo`:
    curated videos to derive again (a change of shot settings with --redo-shots; curation/identity.py).
    """
    from curation.aesthetic import AestheticRemote
    from curation.annotate import Annotate, MediaRemote
    from curation.combine import Combine
    from curation.detect import Detect, DetectRemote, detect_gpus
    from curation.embed import Embed, EmbedRemote, embed_actors, embed_resources
    from curation.local_captioner import LocalCaptionRemote
    from curation.pass_models import PassModel, pass_resources
    from curation.probe import Probe, ProbeRemote, completed_video_ids
    from curation.reconcile import Reconcile
    from curation.split import Split
    from curation.text import TextRemote

    remote_part = {"probe": ProbeRemote, "detect": DetectRemote, "embed": EmbedRemote, "media": MediaRemote,
                "text": TextRemote, "aesthetic": AestheticRemote, "caption": LocalCaptionRemote} | (swap or {})  # fmt: skip
    embed = remote_part["embed"](config.embed, embed_resources(config.embed))
    measures = job_measures(config)
    keep = {"embed": embed.frame_spec} if config.embed.frames_from == "detection" else {}
    models = []  # models over the frames the pass keeps, before a video is committed
    if config.shots.text:
        models.append(remote_part["text"](config.shots, pass_resources()))
    if config.shots.aesthetic_checkpoint:
        models.append(remote_part["aesthetic"](config.shots, pass_resources()))
    keep |= {model.name: model.spec for model in models}
    detect = remote_part["detect"](config.shots, keep or None, gpus=detect_gpus(config.shots), measures=measures)
    return [
        Probe(remote_part["probe"](completed_video_ids(config) - redo, cpus=min(1.0, config.shots.cpus_per_task))),
        Split(config),
        Detect(detect, config.shots),
        *(PassModel(model, config, measures, PASS_FILTERS) for model in models),
        Reconcile(config, SHOT_FILTERS, measures),
        Embed(embed, config, actor_count=embed_actors(config.embed)),
        Combine(config),
        Annotate(
            config.annotate,
            config.output,
            api_key,
            media=remote_part["media"](config.annotate),
            caption=remote_part["caption"](config.annotate) if config.annotate.captioner == "local" else None,
        ),
    ]


def run_stages(
    paths: list[str],
    config: CurationConfig,
    api_key: str | None = None,
    swap: dict[str, type] | None = None,
    after_finish=None,
    redo: frozenset = frozenset(),
    summary: RunSummary | None = None,
) -> Driver:
    """Every input through the whole pipeline; the driver keeps each stage's numbers (`driver.stage(name)`).
    after_finish(name): called as each stage finishes. redo: curated videos to derive again. summary:
    the run's counts, filled as videos end (still there when the run is interrupted)."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    stages = pipeline(config, api_key, swap, redo)
    driver = Driver(stages, config.max_in_flight or 2 * cpus, config.output, summary)
    driver.after_finish = after_finish
    driver.run([VideoTask(path) for path in paths])
    driver.summary.wall_seconds = driver.finished_at["reconcile"]  # the streamed stages
    return driver


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


def nested_folders(config: CurationConfig) -> str | None:
    """--output inside an --input folder (the job would curate its own previews and samples as input
    videos on the next run), or an --input inside --output: said at the door."""

    def key(where) -> str:  # comparable form: a resolved local path, or an object-store URL as written
        where = location(where)
        text = str(where.resolve()) if isinstance(where, Path) else str(where)
        return text.rstrip("/") + "/"

    output = key(config.output)
    for given in config.inputs:
        if location(given).suffix.lower() in VIDEO_SUFFIXES | LIST_SUFFIXES:
            continue  # a file (a video or a list), as resolve_inputs reads it; not a folder to search
        source = key(given)
        if output.startswith(source):
            return (f"--output {config.output} is inside --input {given}: a later run would curate the job's own "
                    "files (previews, keyframes, samples) as input videos; give an --output outside the input folders")  # fmt: skip
        if source.startswith(output):
            return (f"--input {given} is inside --output {config.output}: give input videos from outside the "
                    "output folder")  # fmt: skip
    return None


def curate(config: CurationConfig, api_key: str | None, began: float) -> int:
    """The job on a locked output folder."""
    problem = nested_folders(config)
    if problem:
        print(f"{USAGE}\nerror: {problem}", file=sys.stderr)
        return 2
    if not config.inputs:
        sample_dir = config.output / "sample_videos"
        print(f"no --input given: generating {config.sample_videos} sample videos in {sample_dir}", file=sys.stderr)
        write_sample_videos(sample_dir, count=config.sample_videos)
        config.inputs = [sample_dir]
    input_problems: list[tuple[str, str]] = []
    paths = resolve_inputs(config.inputs, input_problems)
    if input_problems:
        for path, reason in input_problems:
            record_failure(config.output, path, reason, "inputs")
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
    try:
        redo = identity.check(config)  # before Ray starts: a refused re-run costs nothing
    except identity.SettingsChanged as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if redo:
        print(f"re-deriving {len(redo)} curated videos with the new shot settings", file=sys.stderr)
    from curation.local_ray import forget, record_processes, start_ray, stop_ray

    started = start_ray(config.num_cpus, config.output)  # a killed earlier run's Ray processes are cleared first
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's SIGTERM stops the job like Ctrl-C

    def started_processes(stage: str) -> None:  # Ray's agents and workers started since (the long stages are done)
        if started and stage == "embed":
            record_processes(config.output)

    summary = RunSummary()
    try:
        driver = run_stages(paths, config, api_key, after_finish=started_processes, redo=frozenset(redo),
                            summary=summary)  # probe → … → annotate  # fmt: skip
    finally:  # also when interrupted: the videos re-derived so far are done
        pending = identity.settle(config, redo, summary.video_ids) if redo else []
    ensure_tables(config.output)  # every table exists with its schema, empty when nothing qualified
    record = write_run_json(config, driver, paths, time.perf_counter() - began, pending)
    relevance = record["relevance"]
    manifest = record["manifest"]
    from curation.annotate import spend_lines  # the annotation stage's own report lines

    print(
        f"done: {summary.videos_ok} videos curated, {summary.videos_skipped} already done, "
        f"{summary.videos_failed} failed; manifest holds {manifest['shots']} shots "
        f"({manifest['shots_ok']} ok) from {manifest['hours']:.2f} h of video in {config.output}\n"
        f"{relevance['combinations']['combinations_ok']} shot combinations ({relevance['embedding']['embedder']} "
        f"embeddings)\n{spend_lines(relevance['annotation'])}\n"
        f"inspect: python -m manifests inspect {config.output} --html"
    )
    if started:
        stop_ray()
        forget(config.output)  # a clean end: no Ray process of this run is left
    if summary.videos_ok + summary.videos_skipped + summary.duplicates == 0:
        reasons = "; ".join(f["error"] for f in summary.failures[:5])
        print(f"error: no video could be processed: {reasons}", file=sys.stderr)
        return 1
    failed = every_annotation_failed(relevance["annotation"])
    if failed:
        print(f"error: every annotation failed ({failed}); the errors are in the annotations table "
              f"(python -m manifests inspect {config.output}); re-run the same command to retry them", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def every_annotation_failed(report: dict) -> str | None:
    """'12 combinations' when annotation had items and none was answered: with a key, every request
    it made failed (a wrong key, a dead endpoint: the breaker leaves the rest unannotated); without
    one, every item failed before a request (its media). None otherwise."""
    from curation.gemini import REPLIED

    kinds = {what: r for what, r in report.items() if what != "total" and r.get("statuses")}
    statuses = [(what, Status(status), n) for what, r in kinds.items() for status, n in r["statuses"].items()]
    failed = {what: 0 for what in kinds}
    for what, status, n in statuses:
        failed[what] += n if status in (Status.FAILED, Status.ERROR) else 0
    if not statuses or any(status in REPLIED for _, status, _ in statuses) or not sum(failed.values()):
        return None
    key = any(r.get("key_present") for r in kinds.values())
    if not key and any(status == Status.UNANNOTATED for _, status, _ in statuses):
        return None  # the rest wait for a key: nothing was sent
    return ", ".join(f"{n} {what}" for what, n in failed.items() if n)


if __name__ == "__main__":
    sys.exit(main())
