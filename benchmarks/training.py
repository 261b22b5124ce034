"""Training throughput: samples/s and tokens/s, and on a GPU the 5B shape's step time, MFU and memory.

    python benchmarks/training.py               # tiny model through the real trainer (DeepSpeed, CPU)
    python benchmarks/training.py --shape 5b    # GPU: CogVideoX-5B transformer shape, random weights,
                                                # 1 and 3 scenes x 49 frames at 480x720, bf16, checkpointing

MFU counts the model's own FLOPs (6 x parameters x tokens for the matmuls, plus attention over the
allowed part of the dual mask) against the GPU's dense bf16 peak; recomputation from gradient
checkpointing is not counted, as usual. The 1-scene run is the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import cuda_seconds_per_step, random_5b_transformer

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def tiny(steps: int) -> None:
    from curation.run import main as curate
    from training.config import load_config
    from training.train import train

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        assert curate(["--output", str(tmp / "curation"), "--caption-shots"]) == 0
        for scenes in (1, 3):
            config = load_config(root / "training/configs/tiny.yaml", [
                f"data.manifest={tmp / 'curation'}", f"model.path={tmp / 'model'}", f"run.output={tmp / f'run{scenes}'}",
                f"data.scenes={scenes}", f"run.max_steps={steps}", f"run.log_every={steps}"])  # fmt: skip
            logged = train(config)["history"][-1]["logged"]
            print(f"tiny model, CPU, {scenes} scene(s): {logged['samples_per_s']:.1f} samples/s, "
                  f"{logged['tokens_per_s']:.0f} tokens/s, data wait {logged['data_wait_fraction']:.0%}, "
                  f"peak RSS {logged['peak_memory_gib']:.2f} GiB")  # fmt: skip


def model_flops(model, layout, batch: int) -> float:
    """Forward+backward FLOPs of one step: dense matmuls plus attention over allowed query-key pairs."""
    params = sum(p.numel() for p in model.transformer_blocks.parameters())
    tokens = layout.total * batch
    # Allowed query-key pairs of the dual mask: all video x video, and per scene text<->own text and video.
    allowed = layout.video_total**2 + sum(2 * t * v + t * t for t, v in zip(layout.text_lengths, layout.video_lengths))
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    attention = 4 * allowed * inner * len(model.transformer_blocks) * batch  # QK^T and PV, forward
    return 6 * params * tokens + 3 * attention


def five_b(steps: int) -> None:
    from model import SceneLayout

    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    model = random_5b_transformer()
    model.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    base = None
    for scenes in (1, 3):
        frames = [13] * scenes
        layout = SceneLayout.from_frames(frames, 45 * 30, 226)
        latents = torch.randn(1, sum(frames), 16, 60, 90, device="cuda", dtype=torch.bfloat16)
        text = torch.randn(1, 226 * scenes, 4096, device="cuda", dtype=torch.bfloat16)
        rope = model.prepare_rotary_emb(frames, 60, 90, device="cuda")
        t = torch.tensor([500], device="cuda")

        def step(latents=latents, text=text, rope=rope, frames=frames, t=t):
            out = model(
                latents,
                text,
                t,
                image_rotary_emb=rope,
                scene_frames=frames,
                clean_scenes=[0] if len(frames) > 1 else None,
            ).sample
            out.float().square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        seconds = cuda_seconds_per_step(step, steps)
        base = base or seconds
        flops = model_flops(model, layout, 1)
        mfu = f"{flops / seconds / (peak * 1e12):.0%}" if peak else "n/a (unknown GPU peak)"
        print(f"5B shape on {name}, {scenes} scene(s) ({layout.total} tokens), bf16, checkpointing: {seconds:.2f} s/step, "
              f"{layout.total / seconds:.0f} tokens/s, MFU {mfu}, peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, "
              f"{seconds / base:.2f}x the 1-scene step")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "5b"], default=None)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    shape = args.shape or ("5b" if torch.cuda.is_available() else "tiny")
    (five_b if shape == "5b" else tiny)(args.steps if shape == "tiny" else min(args.steps, 5))


if __name__ == "__main__":
    main()
