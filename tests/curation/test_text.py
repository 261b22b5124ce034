"""Tests of `curation/text.py` and of the quality signals together: on a generated video with a
clean shot, burned-in subtitles, a frozen shot, a letterboxed shot, a replay of the first shot, a
corner watermark and a pillarboxed shot, each defect is flagged with its reason, the crops are
exact, clean shots stay ok, and no combination pairs a shot with its replay."""

from __future__ import annotations

import pytest

from curation.text import text_found
from manifests import read_table
from tests.support.jobs import curate_one


def test_only_confident_strings_count_and_their_area_is_clipped_to_the_active_picture():
    box = [[10, 10], [110, 10], [110, 30], [10, 30]]  # 100 x 20 at OCR scale
    lines = [(box, "Hello there", 0.95), (box, "x", 0.99), ([[0, 0], [5, 0], [5, 5], [0, 5]], "ab", 0.3)]
    area, strings = text_found(lines, 2.0, (0, 0, 400, 200), min_score=0.7)  # boxes x2 in source pixels
    assert strings == ["Hello there"] and area == pytest.approx(200 * 40 / (400 * 200))
    area, _ = text_found(lines, 2.0, (0, 60, 400, 140), min_score=0.7)  # the box lies in a bar above the crop
    assert area == 0.0
    assert text_found(None, 1.0, (0, 0, 10, 10), 0.5) == (0.0, [])


@pytest.mark.slow
def test_each_defect_is_flagged_with_its_reason_and_the_replay_is_never_combined(ray_local, tmp_path):
    from curation.samples import write_defect_video

    video = write_defect_video(tmp_path / "in" / "defects.mp4")
    out = tmp_path / "out"
    assert curate_one(out, video, "--scenes", "2", "--min-shot-seconds", "1") == 0
    shots = read_table(out, "shots").sort_values("start_frame").reset_index(drop=True)
    assert shots["start_frame"].tolist() == [0, *video.cuts]
    reasons = dict(zip(video.kinds, shots["filter_reason"].fillna("ok")))
    assert reasons["clean"] == "ok" and reasons["letterbox"] == "ok" and reasons["pillarbox"] == "ok"
    assert reasons["subtitles"].startswith("text") and reasons["watermark"].startswith("text")
    assert reasons["frozen"].startswith("static") and reasons["replay"].startswith("duplicate")
    for index, (x, y, w, h) in video.crops.items():
        got = shots.loc[index, ["crop_x", "crop_y", "crop_w", "crop_h"]].astype(int).tolist()
        assert max(abs(a - b) for a, b in zip(got, (x, y, w, h))) <= 4, (video.kinds[index], got)
    clean = shots.loc[0]
    assert [clean.crop_x, clean.crop_y, clean.crop_w, clean.crop_h] == [0, 0, *video.size]
    replay = shots.loc[video.kinds.index("replay")]
    assert replay.duplicate_of == clean.shot_id
    assert "NEWS" in " ".join(shots.loc[video.kinds.index("watermark"), "text"])
    assert shots["motion_source"].eq("motion_vectors").all() and shots["motion_mean"].iloc[0] > 0.1
    combos = read_table(out, "combinations")
    assert len(combos)  # the ok shots are combined ...
    for ids in combos["shot_ids"]:  # ... never a shot with its replay
        assert not {clean.shot_id, replay.shot_id} <= set(ids)
