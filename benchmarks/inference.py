"""Seconds per denoising step and peak memory of multi-scene generation.

    python benchmarks/inference.py                # tiny random model on CPU, end to end through the pipeline
    python benchmarks/inference.py --shape 5b     # on a GPU: CogVideoX-5B transformer shape, random weights,
                                                  # 3 scenes x 49 frames at 480x720, bf16, with CFG (batch 2)

One denoising step is one transformer call on the CFG batch plus the scheduler step. The 5B run
times the transformer alone (no weights to download: the VAE and T5 are not part of a step).
The single-scene step at the same shape is measured in the same run as the baseline.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks.common import cuda_seconds_per_step, random_5b_transformer


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiny(steps: int) -> None:
    from model.cogvideox_pipeline import Mask2DiTPipeline
    from model.tiny import TINY_SIZE, build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        pipe = Mask2DiTPipeline.from_pretrained(build_tiny_model(Path(tmp) / "model"))
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a man walks into the room", "the man opens the door", "a dog runs in the street"]
    for scenes in (1, 3):
        pipe(prompts[:scenes], num_inference_steps=2, output_type="latent", **TINY_SIZE)  # warm-up
        began = time.perf_counter()
        pipe(prompts[:scenes], num_inference_steps=steps, output_type="latent", **TINY_SIZE)
        per_step = (time.perf_counter() - began) / steps
        print(f"tiny model, CPU, {scenes} scene(s): {per_step * 1e3:.1f} ms/step, peak RSS {peak_rss_mib():.0f} MiB")


def five_b(steps: int) -> None:

    device, dtype = "cuda", torch.bfloat16
    model = random_5b_transformer()
    model.eval()
    base = None
    for scenes in (1, 3):
        frames = [13] * scenes
        latents = torch.randn(2, sum(frames), 16, 60, 90, device=device, dtype=dtype)
        text = torch.randn(2, 226 * scenes, 4096, device=device, dtype=dtype)
        rope = model.prepare_rotary_emb(frames, 60, 90, device=device)
        t = torch.full((2,), 500, device=device)

        inputs = dict(hidden_states=latents, encoder_hidden_states=text, timestep=t, image_rotary_emb=rope,
                      scene_frames=frames)  # fmt: skip

        def step(inputs=inputs):
            with torch.no_grad():
                return model(**inputs).sample

        per_step = cuda_seconds_per_step(step, steps)
        base = base or per_step
        print(f"5B shape, {torch.cuda.get_device_name()}, {scenes} scene(s) x 49 frames 480x720, bf16, CFG batch 2: "
              f"{per_step:.2f} s/step ({per_step / base / scenes:.2f}x the 1-scene step per scene), "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=["tiny", "5b"], default=None)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    shape = args.shape or ("5b" if torch.cuda.is_available() else "tiny")
    (five_b if shape == "5b" else tiny)(args.steps)


if __name__ == "__main__":
    main()
