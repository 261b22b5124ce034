"""A minimal valid shot row and the compact command, for the manifest IO tests."""

from __future__ import annotations


def shot(video_id: str, s: int) -> dict:
    return {"video_id": video_id, "shot_id": f"{video_id}_{s * 50:07d}", "shot_index": s,
            "source_path": f"/data/{video_id}.mp4", "start_frame": s * 50, "end_frame": s * 50 + 50, "num_frames": 50,
            "start_s": s * 2.0, "end_s": s * 2.0 + 2.0, "duration_s": 2.0, "start_pts": s * 50, "end_pts": s * 50 + 50,
            "time_base": "1/25", "fps": 25.0, "width": 320, "height": 240, "rotation": 0, "clip_index": 0,
            "detector": "adaptive(threshold=3,min_scene_frames=15)", "status": "ok"}  # fmt: skip


def compact_cli(folder) -> int:
    from manifests.__main__ import main

    return main(["compact", str(folder)])
