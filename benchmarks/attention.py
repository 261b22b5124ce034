"""Masked attention speed and memory: our backends against unmasked SDPA and the official approach.

    python benchmarks/attention.py                 # CPU, small shape
    python benchmarks/attention.py --shape 5b      # on a GPU: 48 heads x 64, 3 x (226 + 17,550) tokens, bf16

For one attention call and for one full transformer block, forward+backward, it prints the time
and peak memory of each backend as ratios against, in the same run:
  (a) unmasked SDPA on the same sequence: the speed limit for any masked attention;
  (b) the official Mask²DiT approach: per-scene SDPA calls with all video keys/values repeated
      once per scene (their CogVideoXAttnProcessor2_2, rewritten here only to measure it).
Peak memory is CUDA's allocator peak on GPU and the process's peak RSS growth on CPU (each case
runs in its own subprocess there, since RSS peaks never go down).

Then Wan's masked attention (one layer's self-attention over all scenes' video plus its text
cross-attention, forward+backward) for 3 and 8 scenes: full (all video, windowed text) and sparse
(HoloCine's inter-shot attention, k tokens per scene) on the exact segmented backend, and the dense
boolean-mask oracle where it fits, each against unmasked self+cross attention of the same length.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
import torch.nn.functional as F

from model import SceneLayout, scene_attention
from model.cogvideox import Mask2DiTAttnProcessor

SHAPES = {
    # heads, head_dim, scenes, text tokens per scene, latent frames per scene, latent h, w
    "cpu": dict(heads=4, head_dim=64, scenes=3, text=226, frames=4, height=16, width=24),
    "5b": dict(heads=48, head_dim=64, scenes=3, text=226, frames=13, height=60, width=90),
}
CASES = ("unmasked", "official", "segmented", "dense", "flex")
WAN_SHAPES = {
    # heads, head_dim, latent frames per scene, latent h, w, text tokens per scene, sparse tokens per scene
    "cpu": dict(heads=4, head_dim=64, frames=3, height=16, width=24, text=64, sparse=32),
    "wan1.3b": dict(heads=12, head_dim=128, frames=21, height=60, width=104, text=512, sparse=256),
}
WAN_CASES = ("unmasked", "full", "sparse", "sparse-dense")
WAN_SCENES = (3, 8)


def official_attention(q, k, v, layout: SceneLayout):
    """Per scene: text_i -> [text_i, video_i]; video_i -> [text_i, all video] with video K/V copied per scene."""
    T = layout.text_total
    outputs_text, outputs_video = [], []
    for (ts, te), (vs, ve) in zip(layout.text_spans, layout.video_spans):
        keys = torch.cat([k[:, :, ts:te], k[:, :, vs:ve]], dim=2)
        values = torch.cat([v[:, :, ts:te], v[:, :, vs:ve]], dim=2)
        outputs_text.append(F.scaled_dot_product_attention(q[:, :, ts:te], keys, values))
        keys = torch.cat([k[:, :, ts:te], k[:, :, T:]], dim=2)  # all video keys, once more per scene
        values = torch.cat([v[:, :, ts:te], v[:, :, T:]], dim=2)
        outputs_video.append(F.scaled_dot_product_attention(q[:, :, vs:ve], keys, values))
    return torch.cat(outputs_text + outputs_video, dim=2)


def attention_fn(case: str, layout: SceneLayout):
    if case == "unmasked":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v)
    if case == "official":
        return lambda q, k, v: official_attention(q, k, v, layout)
    return lambda q, k, v: scene_attention(q, k, v, layout, case)


class BaselineProcessor(Mask2DiTAttnProcessor):
    """The same layer with a baseline (unmasked or official) in place of the masked attention."""

    def __init__(self, case: str):
        super().__init__()
        self.case = case

    def attend(self, query, key, value, layout):
        return attention_fn(self.case, layout)(query, key, value)


def make_block(shape, device, dtype, case):
    from diffusers.models.transformers.cogvideox_transformer_3d import CogVideoXBlock

    dim = shape["heads"] * shape["head_dim"]
    block = CogVideoXBlock(dim, shape["heads"], shape["head_dim"], time_embed_dim=512, attention_bias=True)
    baseline = case in ("unmasked", "official")
    block.attn1.set_processor(BaselineProcessor(case) if baseline else Mask2DiTAttnProcessor(case))
    return block.to(device=device, dtype=dtype)


def measure(case: str, what: str, shape_name: str, device: str, repeats: int) -> dict:
    shape = SHAPES[shape_name]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokens_per_frame = (shape["height"] // 2) * (shape["width"] // 2)
    layout = SceneLayout.from_frames([shape["frames"]] * shape["scenes"], tokens_per_frame, shape["text"])
    gen = torch.Generator(device="cpu").manual_seed(0)
    heads, head_dim = shape["heads"], shape["head_dim"]
    if what == "attention":
        fn = attention_fn(case, layout)
        q, k, v = (
            torch.randn(1, heads, layout.total, head_dim, generator=gen).to(device, dtype).requires_grad_()
            for _ in range(3)
        )

        def step():
            fn(q, k, v).sum().backward()
    else:
        block = make_block(shape, device, dtype, case)
        dim = heads * head_dim
        video = torch.randn(1, layout.video_total, dim, generator=gen).to(device, dtype).requires_grad_()
        text = torch.randn(1, layout.text_total, dim, generator=gen).to(device, dtype).requires_grad_()
        temb = torch.randn(1, 512, generator=gen).to(device, dtype)

        def step():
            out, enc = block(video, text, temb, None, {"scene_layout": layout})
            (out.sum() + enc.sum()).backward()

    if case == "flex" and device == "cpu":
        return {"case": case, "what": what, "skipped": "FlexAttention has no CPU backward"}
    return _timed(step, device, repeats) | {"case": case, "what": what, "tokens": layout.total}


def measure_wan(case: str, scenes: int, shape_name: str, device: str, repeats: int) -> dict:
    from model.attention import rectangle_attention
    from model.layout import WanSceneLayout
    from model.wan import WanSceneSelfAttnProcessor

    shape = WAN_SHAPES[shape_name]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    per_scene = shape["frames"] * (shape["height"] // 2) * (shape["width"] // 2)
    layout = WanSceneLayout((per_scene,) * scenes, (shape["text"],) * scenes, 0,
                            shape["sparse"] if case.startswith("sparse") else None)  # fmt: skip
    if case == "sparse-dense" and layout.video_total**2 > 2**31:
        return {"case": case, "scenes": scenes, "skipped": f"an N x N mask of {layout.video_total} tokens does not fit"}
    gen = torch.Generator(device="cpu").manual_seed(0)

    def tensor(tokens):
        return (
            torch.randn(1, shape["heads"], tokens, shape["head_dim"], generator=gen).to(device, dtype).requires_grad_()
        )

    q, k, v = tensor(layout.video_total), tensor(layout.video_total), tensor(layout.video_total)
    tk, tv = tensor(layout.text_total), tensor(layout.text_total)

    def step():
        if case == "unmasked":
            out = F.scaled_dot_product_attention(q, k, v) + F.scaled_dot_product_attention(q, tk, tv)
        elif case == "sparse-dense":
            out = WanSceneSelfAttnProcessor.attend(q, k, v, layout, "dense", True)
            out = out + F.scaled_dot_product_attention(q, tk, tv, attn_mask=layout.dense_cross_mask(q.device))
        else:
            out = WanSceneSelfAttnProcessor.attend(q, k, v, layout, "segmented", case == "sparse")
            out = out + rectangle_attention(q, [(tk, tv)], layout.cross_plan())
        out.sum().backward()

    return _timed(step, device, repeats) | {"case": case, "scenes": scenes, "tokens": layout.video_total}


def _timed(step, device: str, repeats: int) -> dict:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        import resource

        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    began = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    seconds = (time.perf_counter() - began) / repeats
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        import resource

        peak = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base)
    return {"seconds": seconds, "peak_bytes": peak}


def run_case(args, device: str, worker: list[str], measure_here):
    """One measurement: in this process on GPU, in a fresh subprocess on CPU (RSS peaks are per process)."""
    if device == "cuda":
        return measure_here()
    cmd = [sys.executable, __file__, "--repeats", str(args.repeats), *worker]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def print_wan(args, device: str) -> list[dict]:
    shape = args.wan_shape or ("wan1.3b" if device == "cuda" else "cpu")
    rows = []
    for scenes in WAN_SCENES:
        for case in WAN_CASES:
            worker = ["--wan-shape", shape, "--wan-worker", case, str(scenes)]
            rows.append(
                run_case(args, device, worker, lambda c=case, n=scenes: measure_wan(c, n, shape, device, args.repeats))
            )
    print(
        f"\nWan masked attention, device {device}, shape {shape}: {WAN_SHAPES[shape]}; self + cross, forward+backward"
    )
    print(
        f"{'scenes':>6} {'tokens':>8} {'case':<13} {'ms':>9} {'peak MiB':>9} {'time/unmasked':>14} {'mem/unmasked':>13}"
    )
    for scenes in WAN_SCENES:
        group = {r["case"]: r for r in rows if r["scenes"] == scenes}
        limit = group["unmasked"]
        for case in WAN_CASES:
            r = group[case]
            if "skipped" in r:
                print(f"{scenes:>6} {'':>8} {case:<13} skipped: {r['skipped']}")
                continue
            r.update(shape=shape, time_vs_unmasked=r["seconds"] / limit["seconds"],
                     memory_vs_unmasked=r["peak_bytes"] / max(limit["peak_bytes"], 1))  # fmt: skip
            print(f"{scenes:>6} {r['tokens']:>8} {case:<13} {r['seconds'] * 1e3:9.1f} {r['peak_bytes'] / 2**20:9.1f} "
                  f"{r['time_vs_unmasked']:14.2f} {r['memory_vs_unmasked']:13.2f}")  # fmt: skip
    return [r | {"backbone": "wan"} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None, help="default: 5b on GPU, cpu otherwise")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--wan-shape", choices=sorted(WAN_SHAPES), default=None, help="default: wan1.3b on GPU")
    parser.add_argument("--only", choices=["cogvideox", "wan"], default=None, help="one backbone's tables")
    parser.add_argument("--json", type=Path, default=None, help="also write every measured row to this JSON file")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "WHAT"), help=argparse.SUPPRESS)
    parser.add_argument("--wan-worker", nargs=2, metavar=("CASE", "SCENES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = args.shape or ("5b" if device == "cuda" else "cpu")
    if args.worker:
        print(json.dumps(measure(*args.worker, shape, device, args.repeats)))
        return
    if args.wan_worker:
        print(
            json.dumps(measure_wan(args.wan_worker[0], int(args.wan_worker[1]), args.wan_shape, device, args.repeats))
        )
        return
    if args.only == "wan":
        write_json(args.json, device, print_wan(args, device))
        return
    results = []
    for what in ("attention", "block"):
        for case in CASES:
            if device == "cuda":
                results.append(measure(case, what, shape, device, args.repeats))
            else:  # own process per case: RSS peaks are per process
                cmd = [
                    sys.executable,
                    __file__,
                    "--shape",
                    shape,
                    "--repeats",
                    str(args.repeats),
                    "--worker",
                    case,
                    what,
                ]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"device {device}, shape {shape}: {SHAPES[shape]}, {results[0]['tokens']} tokens, forward+backward")
    for what in ("attention", "block"):
        rows = {r["case"]: r for r in results if r["what"] == what}
        print(
            f"\n{what:<10} {'case':<10} {'ms':>9} {'peak MiB':>9} {'time/unmasked':>14} {'time/official':>14} {'mem/unmasked':>13}"
        )
        limit, official = rows["unmasked"], rows["official"]
        for case in CASES:
            r = rows[case]
            if "skipped" in r:
                print(f"{'':<10} {case:<10} skipped: {r['skipped']}")
                continue
            r.update(backbone="cogvideox", shape=shape, time_vs_unmasked=r["seconds"] / limit["seconds"],
                     time_vs_official=r["seconds"] / official["seconds"],
                     memory_vs_unmasked=r["peak_bytes"] / max(limit["peak_bytes"], 1))  # fmt: skip
            print(
                f"{'':<10} {case:<10} {r['seconds'] * 1e3:9.1f} {r['peak_bytes'] / 2**20:9.1f} "
                f"{r['time_vs_unmasked']:14.2f} {r['time_vs_official']:14.2f} {r['memory_vs_unmasked']:13.2f}"
            )
    if args.only is None:
        results += print_wan(args, device)
    write_json(args.json, device, results)


def write_json(path: Path | None, device: str, rows: list[dict]) -> None:
    if path is not None:
        name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
        path.write_text(json.dumps({"device": name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
