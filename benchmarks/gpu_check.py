"""Every CUDA path and GPU benchmark in one command that fits a short GPU loan (8 minutes in all).

    python benchmarks/gpu_check.py                      # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --dry-run            # anywhere: what it would run, in seconds
    python benchmarks/gpu_check.py --only cuda-tests training-wan1.3b   # rerun some parts

Each part runs in its own process group under its own timeout (cut to the time the whole check has
left), so a hang or a crash costs that part alone. Everything measured goes to OUT/gpu_check.json
and OUT/gpu_check.md (one row per part), each part's full output to OUT/<part>.log. Without CUDA it
prints the plan and exits 0: the plan stays runnable as the code changes (a test runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOTAL_SECONDS = 480  # the whole check; a GPU loan is minutes, and a rerun must fit beside it


@dataclass(frozen=True)
class Part:
    name: str
    about: str
    timeout: int  # seconds; cut to what the whole check has left
    argv: tuple[str, ...]  # after `python`; {json} is the part's result file, {out} the output folder


PARTS = (
    Part("cuda-tests", "the suite's CUDA-only tests: segmented vs dense attention (bf16, fp32, forward and "
         "gradients, 5B and Wan head layouts, unequal scenes and text), compiled flex, Wan sparse inter-shot "
         "attention, both models in bf16 with gradient checkpointing, Ulysses over NCCL", 150,
         ("-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "--junit-xml", "{out}/cuda-tests.xml",
          "tests/model")),
    Part("attention-cogvideox", "masked attention and one block at the CogVideoX-5B shape (3 x (226 + 17,550) "
         "tokens, bf16): time and peak memory against unmasked SDPA", 60,
         ("benchmarks/attention.py", "--only", "cogvideox", "--shape", "5b", "--json", "{json}")),
    Part("attention-wan", "Wan2.1-1.3B multi-shot attention (3 and 8 scenes x 21 latent frames at 480x832): full "
         "and sparse inter-shot, self + window cross-attention, against unmasked", 60,
         ("benchmarks/attention.py", "--only", "wan", "--wan-shape", "wan1.3b", "--json", "{json}")),
    Part("training-5b", "CogVideoX-5B-config random model, 3 steps at 1 and 3 scenes, bf16, ZeRO-2, gradient "
         "checkpointing: samples/s, MFU, peak memory", 100,
         ("benchmarks/training.py", "--shape", "5b", "--steps", "3", "--json", "{json}")),
    Part("training-wan1.3b", "Wan2.1-1.3B-config random model, the same", 70,
         ("benchmarks/training.py", "--shape", "wan1.3b", "--steps", "3", "--json", "{json}")),
    Part("transnetv2", "TransNetV2 (the package's weights) frames/s on the GPU, 16 windows a batch", 30,
         ("benchmarks/gpu_check.py", "--part", "transnetv2", "--json", "{json}")),
    Part("viclip", "ViCLIP-L/14 (random weights) shots/s in bf16, 8 frames of 224x224 a shot", 40,
         ("benchmarks/gpu_check.py", "--part", "viclip", "--json", "{json}")),
    Part("captioner", "the local captioner's actor work on a tiny random Qwen2.5-VL in bf16 on CUDA: captions/s and "
         "output tokens/s at batch 1, 8 and 32 (a real folder: benchmarks/annotation.py --model)", 60,
         ("benchmarks/annotation.py", "--engine", "transformers", "--items", "32", "--batches", "1", "8", "32",
          "--json", "{json}")),
    Part("curation", "a short curation job (the three built-in sample videos) with TransNetV2 in GPU actors",
         60, ("benchmarks/gpu_check.py", "--part", "curation", "--json", "{json}", "--out", "{out}")),
)  # fmt: skip


# --- the parts that are measured here rather than by another benchmark script ------------------


def transnetv2_rate() -> dict:
    import numpy as np
    import torch

    from model.transnetv2 import TransNetV2Detector

    detector = TransNetV2Detector.load("cuda", batch_windows=16)
    frames = np.random.default_rng(0).integers(0, 255, (4000, 27, 48, 3), dtype=np.uint8)
    detector.predict(frames[:500])  # warm-up: kernels chosen, memory allocated
    torch.cuda.synchronize()
    began = time.perf_counter()
    detector.predict(frames)
    torch.cuda.synchronize()
    rate = len(frames) / (time.perf_counter() - began)
    print(f"TransNetV2 on {torch.cuda.get_device_name()}: {rate:,.0f} frames/s (16 windows a batch)")
    return {"frames_per_s": rate, "frames": len(frames), "batch_windows": 16}


def viclip_rate() -> dict:
    from benchmarks.relevance import viclip_throughput

    return viclip_throughput(batch=16, batches=4)


def curation_job(out: Path) -> dict:
    output = out / "curation"
    command = [sys.executable, "curation/run.py", "--output", str(output), "--detector", "transnetv2"]
    subprocess.run(command, cwd=REPO, check=True)
    record = json.loads((output / "run.json").read_text())
    this_run, seconds = record["this_run"], record["seconds"]
    return {"videos_ok": this_run["videos_ok"], "videos_failed": this_run["videos_failed"],
            "shots": this_run["shots"], "x_real_time": this_run["x_real_time"], "seconds_total": seconds["total"],
            "seconds_shots": seconds["shots"], "gpus_per_task": record["config"]["shots"]["gpus_per_task"]}  # fmt: skip


IN_PROCESS = {"transnetv2": transnetv2_rate, "viclip": viclip_rate, "curation": curation_job}


# --- running the parts ------------------------------------------------------------------------


def run_part(part: Part, out: Path, timeout: float) -> dict:
    """Runs one part in its own process group; returns its row (status, seconds, results)."""
    result_file = out / f"{part.name}.json"
    result_file.unlink(missing_ok=True)
    argv = [a.replace("{json}", str(result_file)).replace("{out}", str(out)) for a in part.argv]
    log = out / f"{part.name}.log"
    began = time.perf_counter()
    with log.open("w") as stream:
        process = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=stream, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
        try:
            code = process.wait(timeout=timeout)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout:.0f} s"
        finally:  # the part's children too (pytest's torchrun ranks, the job's Ray)
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
    row = {"part": part.name, "status": status, "seconds": round(time.perf_counter() - began, 1),
           "timeout": round(timeout), "log": log.name}  # fmt: skip
    if result_file.is_file():
        row["results"] = json.loads(result_file.read_text())
    if part.name == "cuda-tests":
        row["results"] = pytest_counts(log.read_text())
    if status != "ok":
        row["tail"] = log.read_text()[-2000:]
    return row


def pytest_counts(output: str) -> dict:
    """The counts of pytest's closing line ('3 failed, 20 passed, 1 skipped in 80.1s')."""
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed)", output)}
    return counts or {"summary": "no pytest summary line"}


def summary(row: dict) -> str:
    """One cell of the Markdown table: the numbers a reader wants from that part."""
    results = row.get("results")
    if results is None:
        return row["status"]
    name = row["part"]
    if name == "cuda-tests":
        return ", ".join(f"{n} {word}" for word, n in results.items())
    if name.startswith("attention"):
        cells = []
        for r in results["rows"]:
            if "skipped" in r:
                continue
            scenes = f"{r['scenes']} scenes " if "scenes" in r else f"{r['what']} "
            cells.append(f"{scenes}{r['case']}: {r['time_vs_unmasked']:.2f}x time, "
                         f"{r['memory_vs_unmasked']:.2f}x memory")  # fmt: skip
        return "; ".join(cells) + " (vs unmasked SDPA)"
    if name.startswith("training"):
        return "; ".join(
            f"{r['scenes']} scene(s), {r['tokens']} tokens: {r['samples_per_s']:.2f} samples/s, "
            + (f"MFU {r['mfu']:.0%}, " if r["mfu"] is not None else "")
            + f"peak {r['peak_gib']:.1f} GiB"
            for r in results
        )
    if name == "transnetv2":
        return f"{results['frames_per_s']:,.0f} frames/s"
    if name == "viclip":
        return f"{results['shots_per_s']:.1f} shots/s ({results['model']})"
    if name == "curation":
        return (f"{results['videos_ok']} videos ok, {results['videos_failed']} failed, {results['shots']} shots, "
                f"{results['x_real_time']:.1f}x real time, job {results['seconds_total']:.1f} s")  # fmt: skip
    return json.dumps(results)


def markdown(report: dict) -> str:
    lines = [f"# GPU check: {report['device']}", "",
             f"{report['started']}, torch {report['torch']}, CUDA {report['cuda']}, {report['wall_seconds']:.0f} s "
             f"in all (`python benchmarks/gpu_check.py`)", "",
             "| part | status | seconds | results |", "|---|---|---:|---|"]  # fmt: skip
    for row in report["parts"]:
        lines.append(f"| {row['part']} | {row['status']} | {row['seconds']:.1f} | {summary(row)} |")
    return "\n".join(lines) + "\n"


def plan(parts: list[Part], reason: str) -> None:
    print(f"{reason}: the GPU check would run these {len(parts)} parts, {TOTAL_SECONDS} s in all at most:")
    for part in parts:
        print(f"- {part.name} (timeout {part.timeout} s): {part.about}\n    python {' '.join(part.argv)}")


def run_all(parts: list[Part], out: Path) -> dict:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name(), "gpus": torch.cuda.device_count(), "torch": torch.__version__,
              "cuda": torch.version.cuda, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "parts": []}  # fmt: skip
    began = time.perf_counter()
    for part in parts:
        left = TOTAL_SECONDS - (time.perf_counter() - began)
        if left < 10:
            report["parts"].append({"part": part.name, "status": "not run: out of time", "seconds": 0.0})
            continue
        print(f"[{time.perf_counter() - began:5.0f} s] {part.name} (up to {min(part.timeout, left):.0f} s) ...",
              flush=True)  # fmt: skip
        row = run_part(part, out, min(part.timeout, left))
        print(f"[{time.perf_counter() - began:5.0f} s] {part.name}: {row['status']}: {summary(row)}", flush=True)
        report["parts"].append(row)
    report["wall_seconds"] = time.perf_counter() - began
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (out / "gpu_check.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "out" / "gpu_check", help="where results go")
    parser.add_argument("--only", nargs="+", choices=[p.name for p in PARTS], help="run only these parts")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    parser.add_argument("--part", choices=sorted(IN_PROCESS), help=argparse.SUPPRESS)  # one part, in this process
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part:
        measure = IN_PROCESS[args.part]
        result = measure(args.out) if args.part == "curation" else measure()
        args.json.write_text(json.dumps(result, indent=1))
        return 0
    parts = [p for p in PARTS if not args.only or p.name in args.only]
    if args.dry_run:
        plan(parts, "dry run")
        return 0
    import torch

    if not torch.cuda.is_available():
        plan(parts, "no CUDA GPU here")
        return 0
    report = run_all(parts, args.out)
    print(f"\n{markdown(report)}\nwritten: {args.out / 'gpu_check.json'}, {args.out / 'gpu_check.md'}")
    return 0 if all(row["status"] == "ok" for row in report["parts"]) else 1


if __name__ == "__main__":
    sys.exit(main())
