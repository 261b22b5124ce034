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

from pydantic import ValidationError

from curation.config import CurationConfig, DetectorConfig
from curation.inputs import resolve_inputs
from curation.samples import write_sample_videos
from manifests.io import OUTPUT_FULL, ensure_tables, read_table, write_json_atomic

log = logging.getLogger("curation")

# The job's stages, in the order of the paper's data pipeline (Figure 4). Later stages (shot
# relevance, annotation) plug in after shot detection.
STAGES = (
    "probe: content fingerprint, stream facts, PTS of every frame (Ray task per video)",
    "split: 10-minute clip windows with overlap (driver)",
    "detect: PySceneDetect cuts per clip window (Ray task per clip)",
    "reconcile: merge cuts on the source timeline, keyframes, shots.parquet (driver)",
    "embed: shot embeddings, 8 frames per shot (Ray actors, model loaded once; GPU when present)",
    "combine: relevance-filtered ordered shot combinations per clip, combinations.parquet (driver)",
    "annotate: Gemini captions per combination (media cut in Ray tasks; requests rate-limited from the driver)",
)


def _price(text: str) -> tuple[float, float]:
    try:
        prompt, output = (float(x) for x in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected PROMPT,OUTPUT in USD per million tokens, e.g. 0.3,2.5: {text!r}"
        ) from err
    return prompt, output


def parse_args(argv: list[str] | None = None) -> CurationConfig:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--input", nargs="+", default=[], type=Path, help="video files, folders (recursive) or .txt lists of paths"
    )
    parser.add_argument("--output", required=True, type=Path, help="manifest directory (created; re-running resumes)")
    parser.add_argument(
        "--clip-minutes", type=float, default=10.0, help="clip length, the unit of parallel work (default 10)"
    )
    parser.add_argument(
        "--overlap-seconds", type=float, default=2.0, help="extra decode on each side of a clip (default 2)"
    )
    parser.add_argument(
        "--detector",
        choices=["adaptive", "content"],
        default="adaptive",
        help="PySceneDetect detector (default adaptive)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detector threshold (default: PySceneDetect's, 3.0 adaptive / 27 content)",
    )
    parser.add_argument(
        "--min-scene-frames", type=int, default=15, help="detector's minimum scene length in frames (default 15)"
    )
    parser.add_argument(
        "--min-shot-seconds",
        type=float,
        default=2.0,
        help="shots shorter than this are kept but flagged 'filtered' (default 2)",
    )
    parser.add_argument(
        "--decode-threads", type=int, default=2, help="FFmpeg threads per clip task, 0 = auto (default 2)"
    )
    parser.add_argument("--cpus-per-task", type=float, default=1.0, help="Ray CPUs reserved per clip task (default 1)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs for a local Ray (ignored with RAY_ADDRESS)")
    parser.add_argument(
        "--samples", type=int, default=3, help="sample videos generated when no --input is given (default 3)"
    )
    parser.add_argument("--no-retry-failed", action="store_true", help="on resume, skip videos that failed before")
    relevance = parser.add_argument_group("shot relevance (embeddings and combinations)")
    relevance.add_argument("--embedder", choices=["viclip", "clip", "color"], default="color",
                           help="viclip (the paper's; needs --viclip-checkpoint), clip (needs --clip-checkpoint), "
                                "or color: weight-free, runs anywhere, lower fidelity (default)")  # fmt: skip
    relevance.add_argument("--viclip-checkpoint", type=Path, help="ViClip-InternVid-10M-FLT.pth or model.safetensors")
    relevance.add_argument("--clip-checkpoint", type=Path, help="a local Hugging Face CLIP folder")
    relevance.add_argument("--embed-batch", type=int, default=16, help="shots per embedding batch (default 16)")
    relevance.add_argument("--scenes", type=int, default=3, help="shots per combination (default 3)")
    relevance.add_argument(
        "--within",
        choices=["clip", "video"],
        default="clip",
        help="combine shots within a clip (default) or a whole video",
    )
    relevance.add_argument(
        "--min-shot-frames", type=int, default=49, help="shortest usable shot in source frames (default 49)"
    )
    relevance.add_argument("--min-relevance", type=float, default=0.5,
                           help="min calibrated pair score: z-score of the cosine among the group's pairs (default 0.5)")  # fmt: skip
    relevance.add_argument(
        "--duplicate-threshold", type=float, default=0.95, help="raw cosine marking near-duplicates (default 0.95)"
    )
    relevance.add_argument("--max-uses", type=int, default=2, help="combinations one shot may appear in (default 2)")
    relevance.add_argument(
        "--neighbors", type=int, default=8, help="best partners per shot that candidates grow from (default 8)"
    )
    relevance.add_argument(
        "--embed-frames-per-shot", type=int, default=8,
        help="frames the colour/CLIP embedders average per shot; ViCLIP takes its own 8 (default 8)",
    )  # fmt: skip
    relevance.add_argument(
        "--keep-all", action="store_true", help="write every candidate with its scores (tune thresholds offline)"
    )
    gemini = parser.add_argument_group("annotation (Gemini; the key comes from GEMINI_API_KEY or GOOGLE_API_KEY)")
    gemini.add_argument("--gemini-model", default="gemini-2.5-flash")
    gemini.add_argument(
        "--gemini-input", choices=["frames", "video"], default="frames",
        help="send each shot as JPEG frames (default) or as a short low-resolution MP4",
    )  # fmt: skip
    gemini.add_argument(
        "--gemini-rpm", type=float, default=60.0, help="requests per minute for the whole run (default 60)"
    )
    gemini.add_argument("--gemini-concurrency", type=int, default=4, help="requests in flight at once (default 4)")
    gemini.add_argument("--gemini-timeout", type=float, default=120.0, help="seconds per request (default 120)")
    gemini.add_argument("--gemini-max-retries", type=int, default=5, help="retries on 429/5xx/timeouts (default 5)")
    gemini.add_argument("--gemini-backoff", type=float, default=2.0, help="first retry delay in seconds (default 2)")
    gemini.add_argument("--gemini-base-url", help="API endpoint override (a proxy, or a test server)")
    gemini.add_argument(
        "--gemini-max-reasks", type=int, default=2, help="re-asks after a reply breaks a caption rule (default 2)"
    )
    gemini.add_argument("--gemini-temperature", type=float, default=0.2, help="sampling temperature (default 0.2)")
    gemini.add_argument(
        "--gemini-frames-per-shot",
        type=int,
        default=4,
        help="JPEG frames sent per shot with --gemini-input frames (default 4)",
    )
    gemini.add_argument(
        "--gemini-price", type=_price, metavar="PROMPT,OUTPUT",
        help="USD per million prompt and output tokens for run.json's cost estimate (default: the model's list price)",
    )  # fmt: skip
    gemini.add_argument(
        "--max-requests", type=int,
        help="request budget for the whole run (combinations and shots); the rest stays unannotated, a re-run goes on",
    )  # fmt: skip
    gemini.add_argument("--caption-shots", action="store_true", help="also caption single shots (for pretraining)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        # Flags named like config fields pass straight through; the rest are renamed or grouped here.
        same_name = {k: v for k, v in vars(args).items() if k in CurationConfig.model_fields and k != "detector"}
        return CurationConfig(
            **same_name,
            inputs=args.input,
            detector=DetectorConfig(
                kind=args.detector, threshold=args.threshold, min_scene_frames=args.min_scene_frames
            ),
            sample_videos=args.samples,
            retry_failed=not args.no_retry_failed,
        )
    except ValidationError as err:
        parser.error("; ".join(_flag_message(e) for e in err.errors()))


# Config fields whose flag is not simply the field's name with dashes.
RENAMED_FLAGS = {"inputs": "--input", "sample_videos": "--samples", "retry_failed": "--no-retry-failed",
                 "detector.kind": "--detector", "detector.threshold": "--threshold",
                 "detector.min_scene_frames": "--min-scene-frames"}  # fmt: skip


def _flag_message(error: dict) -> str:
    """'--flag: what is wrong' for a field error; a whole-config check names its flags itself."""
    message = error["msg"].removeprefix("Value error, ")
    if not error["loc"]:
        return message
    field = ".".join(map(str, error["loc"]))
    return f"{RENAMED_FLAGS.get(field, '--' + field.replace('_', '-'))}: {message}"


def start_ray(config: CurationConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    # Workers of a local Ray must import this repository even when it is not pip-installed.
    root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=config.num_cpus,
        include_dashboard=False,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        logging_level=logging.WARNING,
    )


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
    ok_videos = videos[videos["status"] == "ok"]
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
            "videos_failed": int((videos["status"] == "failed").sum()),
            "hours": float(ok_videos["duration_s"].sum() / 3600),
            "shots": int(len(shots)),
            "shots_ok": int((shots["status"] == "ok").sum()),
            "shots_filtered": int((shots["status"] == "filtered").sum()),
        },
        "relevance": relevance,
        "seconds": {
            "total": total_s,  # the whole job: start-up, every stage, writing
            "shots": summary.wall_seconds,  # probe, clips, detect, reconcile
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


def run_relevance(config: CurationConfig) -> dict:
    """Embed new shots, then mine combinations over the whole manifest (cheap: per clip, on the driver)."""
    from dataclasses import asdict

    from curation.combinations import mine
    from curation.embed import run_embedding
    from manifests.io import remove_part, table_path, write_part

    embedding = run_embedding(config.output, config.embedder_config())
    began = time.perf_counter()
    embeddings = read_table(config.output, "shot_embeddings", missing_ok=True)
    embeddings = embeddings[(embeddings["embedder"] == embedding.embedder)
                            & (embeddings["checkpoint_hash"].fillna("") == (embedding.checkpoint_hash or ""))]  # fmt: skip
    combos, stats = mine(read_table(config.output, "shots", missing_ok=True), embeddings, config.miner_config())
    folder = table_path(config.output, "combinations")
    stale = {p.name.removeprefix("part-").removesuffix(".parquet") for p in folder.glob("part-*.parquet")}
    for video_id, rows in combos.groupby("video_id") if len(combos) else []:
        write_part(config.output, "combinations", video_id, rows)
        stale.discard(video_id)
    # Only videos that were mined again and now yield nothing lose their combinations (stricter
    # thresholds); a video whose shots are missing keeps everything derived from it.
    mined = set(read_table(config.output, "shots", missing_ok=True)["video_id"])
    for video_id in stale & mined:
        remove_part(config.output, "combinations", video_id)
        remove_part(config.output, "annotations", video_id)  # their captions would dangle
    from curation.annotate import run_annotation

    annotation = run_annotation(config.output, config.gemini_settings(), config.media_settings(), config.caption_shots)
    return {
        "embedding": asdict(embedding),
        "combinations": stats.as_dict() | {"seconds": time.perf_counter() - began},
        "annotation": annotation,
    }


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The job, with the two ways it can stop early turned into one clear line each."""
    try:
        return run(argv)
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
    began = time.perf_counter()
    config = parse_args(argv)
    config.output.mkdir(parents=True, exist_ok=True)
    if not config.inputs:
        sample_dir = config.output / "sample_videos"
        print(f"no --input given: generating {config.sample_videos} sample videos in {sample_dir}", file=sys.stderr)
        write_sample_videos(sample_dir, count=config.sample_videos)
        config.inputs = [sample_dir]
    input_problems: list[tuple[str, str]] = []
    paths = resolve_inputs(config.inputs, input_problems)
    if input_problems:
        from curation.finalize import commit_failure

        for path, reason in input_problems:
            commit_failure(path, reason, "inputs", config)
            print(f"warning: {reason}", file=sys.stderr)
    if not paths:
        print(f"error: no video files found in {', '.join(map(str, config.inputs))}", file=sys.stderr)
        return 2
    missing = [p for p in paths if not os.path.exists(p)]
    for path in missing:  # said at once, before Ray starts; each still becomes a failed row
        print(f"warning: --input {path}: file not found", file=sys.stderr)
    if len(missing) == len(paths):
        print("error: none of the --input paths exists; nothing to do", file=sys.stderr)
        return 2
    start_ray(config)
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's SIGTERM stops the job like Ctrl-C
    from curation.pipeline import run_pipeline

    summary = run_pipeline(paths, config)
    relevance = run_relevance(config)
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
    if summary.videos_ok + summary.videos_skipped + summary.duplicates == 0:
        reasons = "; ".join(f["error"] for f in summary.failures[:5])
        print(f"error: no video could be processed: {reasons}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
