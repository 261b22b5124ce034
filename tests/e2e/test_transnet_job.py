"""End to end: the job with TransNetV2 in its Ray workers, resumed with one more input."""

from __future__ import annotations

import pytest

from tests.support.transnet import detect


@pytest.mark.slow
def test_a_job_with_transnet_resumes_and_records_dropped_transitions(ray_local, tmp_path, transition_video, detector):
    """The real job (Ray workers load the network once each): a re-run with one more input keeps the
    committed video as it was and detects only the new one, with the single pass's cuts."""
    import shutil

    from curation.run import main
    from manifests import read_table
    from tests.conftest import CLIP_MINUTES

    other = tmp_path / "other.mp4"
    shutil.copy(transition_video.path, tmp_path / "first.mp4")
    from curation.samples import write_transition_video

    second = write_transition_video(other, [60, 90, 70], [("dissolve", 20), ("cut", 0)], size=(160, 90), seed=4)
    out = tmp_path / "out"
    flags = ["--output", str(out), "--clip-minutes", f"{CLIP_MINUTES * 2}", "--detector", "transnetv2",
             "--transition-frames", "drop", "--min-shot-seconds", "0.5"]  # fmt: skip
    assert main(["--input", str(tmp_path / "first.mp4"), *flags]) == 0
    before = read_table(out, "videos")
    assert main(["--input", str(tmp_path / "first.mp4"), str(other), *flags]) == 0
    videos, shots = read_table(out, "videos"), read_table(out, "shots")
    assert len(videos) == 2 and set(videos["status"]) == {"ok"}
    kept = videos[videos["video_id"].isin(before["video_id"])]
    assert kept["processing_s"].tolist() == before["processing_s"].tolist()  # not redone
    from curation.config import DetectorConfig

    for video in (transition_video, second):
        (whole,) = detect(video, DetectorConfig(kind="transnetv2", transition_frames="drop"), detector=detector)
        mine = shots[shots["source_path"].str.endswith(video.path.name if video is second else "first.mp4")]
        assert sorted(mine["start_frame"])[1:] == whole.cuts
        dropped = mine[mine["filter_reason"].fillna("").str.contains("transition")]
        assert sorted(zip(dropped["start_frame"], dropped["end_frame"])) == whole.transitions
        assert set(mine["status"]) <= {"ok", "filtered"}
    assert shots["detector"].str.startswith("transnetv2(threshold=0.5").all()
