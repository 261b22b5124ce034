"""Training throughput: samples/s and tokens/s, and on a GPU the step time, MFU and memory.

    python benchmarks/training.py                    # tiny model through the real trainer (DeepSpeed, CPU)
    python benchmarks/training.py --shape 5b         # GPU: CogVideoX-5B transformer shape, random weights,
                                                     # 1 and 3 scenes x 49 frames at 480x720
    python benchmarks/training.py --shape wan1.3b    # GPU: Wan2.1-1.3B shape, 1 and 3 scenes x 33 frames at 480x832

The GPU shapes train through DeepSpeed ZeRO-2 in bf16 with gradient checkpointing. MFU counts the model's own FLOPs (6 x parameters x tokens for the matmuls, plus attention over the
allowed part of the dual mask) against the GPU's dense bf16 peak; recomputation from gradient
checkpointing is not counted, as usual. The 1-scene run is the baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import cuda_seconds_per_step, random_5b_transformer, random_wan13b_transformer

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


def attention_pairs(layout) -> int:
    """Allowed query-key pairs of the dual mask (CogVideoX's joint sequence or Wan's self+cross)."""
    from model import SceneLayout

    if isinstance(layout, SceneLayout):  # CogVideoX: text and video in one sequence
        return layout.video_total**2 + sum(2 * t * v + t * t for t, v in zip(layout.text_lengths, layout.video_lengths))
    self_pairs = layout.video_total**2  # full inter-shot self-attention
    cross_pairs = sum(v * (layout.global_text + t) for t, v in zip(layout.text_lengths, layout.video_lengths))
    return self_pairs + cross_pairs


def model_flops(blocks, inner: int, layout, tokens: int, batch: int = 1) -> float:
    """Forward+backward FLOPs of one step: 6 x block parameters x tokens for the matmuls, plus 3 x the
    forward attention (QK^T and PV over the allowed pairs). Recomputation from checkpointing is not counted."""
    params = sum(p.numel() for p in blocks.parameters())
    attention = 4 * attention_pairs(layout) * inner * len(blocks) * batch
    return 6 * params * tokens * batch + 3 * attention


def cogvideox_case(model, scenes: int):
    """A 5B step's inputs: `scenes` x 13 latent frames (49 frames) at 480x720."""
    from model import SceneLayout

    frames = [13] * scenes
    layout = SceneLayout.from_frames(frames, 45 * 30, 226)
    inputs = dict(hidden_states=torch.randn(1, sum(frames), 16, 60, 90, device="cuda", dtype=torch.bfloat16),
                  encoder_hidden_states=torch.randn(1, 226 * scenes, 4096, device="cuda", dtype=torch.bfloat16),
                  timestep=torch.tensor([500], device="cuda"), scene_frames=frames,
                  image_rotary_emb=model.prepare_rotary_emb(frames, 60, 90, device="cuda"),
                  clean_scenes=[0] if scenes > 1 else None)  # fmt: skip
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    return inputs, layout, layout.total, model.transformer_blocks, inner


def wan_case(model, scenes: int):
    """A Wan2.1-1.3B step's inputs: `scenes` x 9 latent frames (33 frames) at 480x832, 512 text tokens each."""
    frames = [9] * scenes
    inputs = dict(hidden_states=torch.randn(1, 16, sum(frames), 60, 104, device="cuda", dtype=torch.bfloat16),
                  encoder_hidden_states=torch.randn(1, 512 * scenes, 4096, device="cuda", dtype=torch.bfloat16),
                  timestep=torch.tensor([500.0], device="cuda"), scene_frames=frames, scene_text=[512] * scenes,
                  clean_scenes=[0] if scenes > 1 else None)  # fmt: skip
    layout = model.scene_layout(frames, 60, 104, [512] * scenes)
    inner = model.config.num_attention_heads * model.config.attention_head_dim
    return inputs, layout, layout.video_total, model.blocks, inner


GPU_SHAPES = {"5b": (random_5b_transformer, cogvideox_case), "wan1.3b": (random_wan13b_transformer, wan_case)}


def zero2_engine(model):
    """DeepSpeed ZeRO-2 in bf16 on one GPU, torch's fused AdamW (as the trainer builds it)."""
    import deepspeed

    from training.engine import single_process_group

    single_process_group()
    deepspeed.init_distributed(dist_backend="nccl", verbose=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
              "bf16": {"enabled": True}, "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True,
              "steps_per_print": 10**9, "wall_clock_breakdown": False}  # fmt: skip
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def gpu_training(shape: str, steps: int) -> list[dict]:
    """A few ZeRO-2 bf16 steps with gradient checkpointing at 1 and 3 scenes; samples/s, MFU, peak memory."""
    build, case = GPU_SHAPES[shape]
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    model = build()
    model.enable_gradient_checkpointing()
    engine = zero2_engine(model)
    rows, base = [], None
    for scenes in (1, 3):
        inputs, layout, tokens, blocks, inner = case(model, scenes)

        def step(inputs=inputs):
            loss = engine(**inputs).sample.float().square().mean()
            engine.backward(loss)
            engine.step()

        seconds = cuda_seconds_per_step(step, steps)
        base = base or seconds
        flops = model_flops(blocks, inner, layout, tokens)
        row = {"shape": shape, "device": name, "scenes": scenes, "tokens": tokens, "seconds_per_step": seconds,
               "samples_per_s": 1 / seconds, "tokens_per_s": tokens / seconds, "flops_per_step": flops,
               "mfu": flops / seconds / (peak * 1e12) if peak else None,
               "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "time_vs_1_scene": seconds / base}  # fmt: skip
        rows.append(row)
        mfu = f"{row['mfu']:.0%}" if peak else "n/a (unknown GPU peak)"
        print(f"{shape} shape on {name}, {scenes} scene(s) ({tokens} tokens), bf16, ZeRO-2, checkpointing: "
              f"{seconds:.2f} s/step, {row['samples_per_s']:.2f} samples/s, {row['tokens_per_s']:.0f} tokens/s, "
              f"MFU {mfu} ({flops / 1e12:.0f} TFLOP/step), peak {row['peak_gib']:.1f} GiB, "
              f"{row['time_vs_1_scene']:.2f}x the 1-scene step")  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", *GPU_SHAPES], default=None, help="default: 5b on GPU, tiny on CPU")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (at most 5 on the GPU shapes)")
    parser.add_argument("--json", type=Path, default=None, help="also write the GPU rows to this JSON file")
    args = parser.parse_args()
    shape = args.shape or ("5b" if torch.cuda.is_available() else "tiny")
    if shape == "tiny":
        tiny(args.steps)
        return
    rows = gpu_training(shape, min(args.steps, 5))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
