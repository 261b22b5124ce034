"""Local captioner throughput: captions/s and output tokens/s, the numbers that set captioning's cost.

    python benchmarks/annotation.py                          # a tiny random Qwen2.5-VL on this CPU
    python benchmarks/annotation.py --family qwen3_vl
    python benchmarks/annotation.py --model /models/Qwen2.5-VL-7B-Instruct --items 64 --batches 1 8 32

Runs the caption stage's own work (`curation.local_captioner.LocalCaptionRemote.process`: prompt,
videos, batched generate under the reply grammar, rule checks, re-asks) in this process on
synthetic 3-shot items, once per batch size, and prints captions/s and output tokens/s with the
ratio to batch size 1 measured in the same run. A random model never closes its JSON, so every
reply runs to --max-new-tokens: every batch size generates the same number of tokens. The grammar's
own cost is printed as the ratio of tokens/s with it to tokens/s of the same generate without it.
On a GPU with vLLM installed, --engine vllm measures vLLM's offline engine instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np


def items(count: int, shots: int, frames: int, seed: int = 0):
    from curation.local_captioner import CaptionItem

    rng = np.random.default_rng(seed)
    return [CaptionItem(f"c{i}", [3.0] * shots, [rng.integers(0, 256, (frames, 216, 384, 3), dtype=np.uint8)
                                                 for _ in range(shots)]) for i in range(count)]  # fmt: skip


def measure(stage, work, batch: int) -> tuple[float, float, int]:
    """(captions/s, output tokens/s, output tokens) over `work` in batches of `batch`."""
    began = time.perf_counter()
    tokens = 0
    for start in range(0, len(work), batch):
        tokens += sum(a.output_tokens for a in stage.process(work[start : start + batch]))
    seconds = time.perf_counter() - began
    return len(work) / seconds, tokens / seconds, tokens


def grammar_ratio(stage, work, tokens: int) -> float:
    """Output tokens/s with the grammar over the same generate without it (one batch of all items)."""
    from curation.captions import reply_schema
    from curation.local_captioner import first_messages
    from model.vl_captioner import Request

    model = stage.model
    requests = [Request(first_messages(i, reply_schema(len(i.frames))), i.frames, fps=4.0) for i in work]
    timed = {}
    for held in (True, False):
        began = time.perf_counter()
        if held:
            replies = model.generate(requests, reply_schema(len(work[0].frames)), tokens, temperature=1.0)
        else:
            replies = _unconstrained(model, requests, tokens)
        timed[held] = sum(r.output_tokens for r in replies) / (time.perf_counter() - began)
    return timed[True] / timed[False]


class _NoStop:
    """Bans the end tokens, so that free text runs to the same length as the grammar's replies."""

    def __init__(self, stop_ids):
        self.stop_ids = list(stop_ids)

    def __call__(self, input_ids, scores):
        scores[:, self.stop_ids] = float("-inf")
        return scores


def _unconstrained(model, requests, tokens):
    """The same batched generate without a grammar (free text of the same length)."""
    return model.generate(requests, None, tokens, temperature=1.0, logits_processors=[_NoStop(model.stop_ids)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a Qwen-VL folder (default: a tiny random one built here)")
    parser.add_argument("--family", choices=["qwen2_vl", "qwen2_5_vl", "qwen3_vl"], default="qwen2_5_vl")
    parser.add_argument("--engine", choices=["auto", "transformers", "vllm"], default="auto")
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8, help="frames per shot (the video at --gemini-video-fps)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    args = parser.parse_args(argv)

    from curation.config import AnnotateConfig
    from curation.local_captioner import LocalCaptionRemote
    from model.tiny import build_tiny_captioner

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or build_tiny_captioner(Path(tmp) / "tiny", args.family)
        settings = AnnotateConfig(captioner="local", max_reasks=0, temperature=1.0,
                                  local={"model": folder, "engine": args.engine, "max_new_tokens": args.max_new_tokens})  # fmt: skip
        stage = LocalCaptionRemote(settings)
        began = time.perf_counter()
        stage.setup()
        print(f"model {folder.name} ({stage.model.family}) on {getattr(stage.model, 'device', 'gpu')} via "
              f"{stage.model.engine}: loaded in {time.perf_counter() - began:.2f} s; {args.items} items of "
              f"{args.shots} shots x {args.frames} frames, {args.max_new_tokens} new tokens at most")  # fmt: skip
        work = items(args.items, args.shots, args.frames)
        stage.process(work[:1])  # warm-up: first-call costs (grammar compile, kernels) out of the timings
        base, report = None, {"model": str(folder), "engine": stage.model.engine, "batches": {}}
        for batch in args.batches:
            captions, tokens_s, tokens = measure(stage, work, batch)
            base = base or tokens_s
            report["batches"][batch] = {"captions_per_s": captions, "output_tokens_per_s": tokens_s}
            print(f"batch {batch:3d}: {captions:7.3f} captions/s  {tokens_s:8.1f} output tokens/s  "
                  f"({tokens_s / base:.2f}x batch {args.batches[0]})")  # fmt: skip
        if stage.model.engine == "transformers":
            ratio = grammar_ratio(stage, work[: max(args.batches)], args.max_new_tokens)
            print(f"grammar: tokens/s with the reply grammar are {ratio:.2f}x those without it")
            report["grammar_ratio"] = ratio
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
