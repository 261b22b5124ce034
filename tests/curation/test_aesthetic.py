"""Tests of `curation/aesthetic.py`: with a (tiny random) LAION predictor and CLIP folder, every
shot the earlier filters keep gets an aesthetic score from the kept frames; --min-aesthetic flags."""

from __future__ import annotations

import pytest
import torch

from curation.config import CurationConfig
from manifests import read_table
from tests.support.jobs import curate_one


def test_shots_get_a_score_and_the_threshold_flags_them(ray_local, tmp_path, backbones, long_video):
    from model.aesthetic import AestheticMLP

    checkpoint = tmp_path / "aesthetic.pth"
    torch.save(AestheticMLP(16).state_dict(), checkpoint)  # the tiny CLIP's embedding width
    flags = ["--aesthetic-checkpoint", str(checkpoint), "--aesthetic-clip", str(backbones / "clip"), "--no-text"]
    assert curate_one(tmp_path / "a", long_video, *flags) == 0
    shots = read_table(tmp_path / "a", "shots")
    kept = shots["status"] == "ok"
    assert shots.loc[kept, "aesthetic"].notna().all() and shots["text_area"].isna().all()
    score = float(shots.loc[kept, "aesthetic"].max())
    assert curate_one(tmp_path / "b", long_video, *flags, "--min-aesthetic", f"{score + 1:.3f}") == 0
    again = read_table(tmp_path / "b", "shots").set_index("shot_id")
    assert again.loc[shots.loc[kept, "shot_id"], "filter_reason"].str.startswith("aesthetic score").all()


def test_the_checkpoint_needs_its_clip_folder(tmp_path):
    (tmp_path / "m.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match="go together"):
        CurationConfig(output=tmp_path / "o", shots={"aesthetic_checkpoint": tmp_path / "m.pth"})
    with pytest.raises(ValueError, match="--min-aesthetic needs"):
        CurationConfig(output=tmp_path / "o", shots={"min_aesthetic": 5})
