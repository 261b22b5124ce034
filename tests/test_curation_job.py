"""The curation job end to end (in-process local Ray): manifests, resume, bad inputs, inspection."""

import json
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.run import main
from curation.samples import write_synthetic_video
from manifests import ManifestError, read_table
from manifests.frames import read_shot_frames
from manifests.inspect import html_report, text_report
from tests.conftest import CLIP_MINUTES


@pytest.fixture()
def bad_inputs(tmp_path, multi_shot_video):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "notes.mp4").write_text("this is not a video\n")
    (bad / "empty.mp4").write_bytes(b"")
    data = multi_shot_video.path.read_bytes()
    (bad / "truncated.mp4").write_bytes(data[: len(data) // 3])  # index at the end: unreadable
    faststart = write_synthetic_video(tmp_path / "faststart.mp4", [60, 60, 60], faststart=True).path.read_bytes()
    (bad / "truncated_faststart.mp4").write_bytes(faststart[: len(faststart) // 2])  # index lists missing frames
    return bad


def run_job(output, *inputs, extra=()):
    return main(["--input", *map(str, inputs), "--output", str(output), "--clip-minutes", f"{CLIP_MINUTES}", *extra])


def test_job_writes_validated_manifests_on_the_source_timeline(ray_local, tmp_path, multi_shot_video, long_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path, long_video.path) == 0
    videos, clips, shots = (read_table(out, name) for name in ("videos", "clips", "shots"))
    assert set(videos["status"]) == {"ok"} and len(videos) == 2
    long_id = videos.loc[videos["source_path"].str.endswith("long.mp4"), "video_id"].item()
    assert (clips["video_id"] == long_id).sum() >= 4
    long_shots = shots[shots["video_id"] == long_id].sort_values("start_frame")
    starts = long_shots["start_frame"].tolist()
    assert len(starts) == len(long_video.cuts) + 1
    assert all(abs(a - b) <= 1 for a, b in zip(starts[1:], long_video.cuts))
    # Spans tile the video exactly, and times come from PTS on the source timeline.
    assert (long_shots["end_frame"].values[:-1] == long_shots["start_frame"].values[1:]).all()
    assert long_shots["end_frame"].iloc[-1] == long_video.num_frames
    assert long_shots["start_s"].tolist() == pytest.approx([s / 24.0 for s in starts], abs=1e-3)
    # Every shot has a keyframe on disk and the plain pandas one-liner reads the same table.
    assert all((out / p).is_file() for p in shots["keyframe_path"])
    assert len(pd.read_parquet(out / "shots.parquet")) == len(shots)
    record = json.loads((out / "run.json").read_text())
    assert record["manifest"]["shots"] == len(shots) and record["versions"]["scenedetect"]
    # The stages run.json names are the declared list, in Figure 4's order, each in its module.
    names = ["probe", "split", "detect", "reconcile", "embed", "combine", "annotate"]
    assert [line.split(":")[0] for line in record["stages"]] == names
    assert all(line.endswith(f"(curation/{name}.py)") for name, line in zip(names, record["stages"]))
    # A shot's frames read back frame-exactly: the first frame of shot 2 differs from the last of shot 1.
    first = read_shot_frames(long_shots.iloc[2].to_dict(), indices=[0])
    assert first.shape == (1, 240, 320, 3)


def test_rerun_resumes_without_duplicates_and_renamed_copies_are_not_reprocessed(ray_local, tmp_path, multi_shot_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path) == 0
    before = read_table(out, "shots")
    renamed = tmp_path / "renamed.mp4"
    shutil.copy(multi_shot_video.path, renamed)
    assert run_job(out, multi_shot_video.path, renamed) == 0
    after = read_table(out, "shots")
    assert len(after) == len(before) and after["shot_id"].is_unique
    record = json.loads((out / "run.json").read_text())
    assert record["this_run"]["videos_skipped_already_done"] == 2 and record["this_run"]["videos_ok"] == 0


def test_killed_run_leaves_no_duplicates(ray_local, tmp_path, multi_shot_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path) == 0
    # Simulate a kill after shots were written but before the video was committed, plus a
    # half-written temporary file: the re-run redoes the video and the tables stay clean.
    for part in (out / "videos.parquet").glob("part-*.parquet"):
        part.unlink()
    (out / "shots.parquet" / ".tmp-partial.parquet").write_bytes(b"PAR1garbage")
    assert run_job(out, multi_shot_video.path) == 0
    shots = read_table(out, "shots")
    assert shots["shot_id"].is_unique and len(shots) == len(multi_shot_video.cuts) + 1
    assert len(pd.read_parquet(out / "shots.parquet")) == len(shots)


def test_bad_inputs_become_failed_rows_and_the_run_goes_on(ray_local, tmp_path, multi_shot_video, bad_inputs):
    out = tmp_path / "out"
    missing = tmp_path / "missing.mp4"
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# one per line\n{multi_shot_video.path}\n{missing}\n")
    assert run_job(out, listing, bad_inputs) == 0
    videos = read_table(out, "videos").set_index("source_path")
    assert videos.loc[str(multi_shot_video.path), "status"] == "ok"
    failed = videos[videos["status"] == "failed"]
    assert len(failed) == 5
    errors = {p.rsplit("/", 1)[-1]: e for p, e in failed["error"].items()}
    assert "not found" in errors["missing.mp4"]
    assert "empty" in errors["empty.mp4"]
    assert "not a video, or truncated" in errors["notes.mp4"] and "truncated" in errors["truncated.mp4"]
    assert "truncated or corrupt" in errors["truncated_faststart.mp4"]
    report = text_report(out)
    assert "5 failed" in report and "missing.mp4" in report


def test_job_fails_only_when_nothing_could_be_processed(ray_local, tmp_path, bad_inputs, capsys):
    assert run_job(tmp_path / "out", bad_inputs) == 1
    assert "no video could be processed" in capsys.readouterr().err


def test_rotated_video_keyframes_are_upright(ray_local, tmp_path):
    import cv2

    video = write_synthetic_video(tmp_path / "portrait.mp4", [60, 60], size=(160, 96), rotation=90)
    out = tmp_path / "out"
    assert run_job(out, video.path, extra=["--min-shot-seconds", "0"]) == 0
    shots = read_table(out, "shots")
    assert (shots["width"] == 96).all() and (shots["height"] == 160).all()
    keyframe = cv2.imread(str(out / shots["keyframe_path"].iloc[0]))
    assert keyframe.shape[:2] == (160, 96)


def test_short_shots_are_flagged_not_dropped(ray_local, tmp_path, multi_shot_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path, extra=["--min-shot-seconds", "2.0"]) == 0
    shots = read_table(out, "shots").sort_values("start_frame")
    # Shots of 40 and 30 frames at 24 fps are under 2 s.
    assert shots["status"].tolist() == ["ok", "filtered", "ok", "filtered", "ok"]
    assert shots["filter_reason"].dropna().str.contains("min-shot-seconds").all()


def test_wrong_schema_is_a_clear_error_naming_the_file(tmp_path):
    folder = tmp_path / "shots.parquet"
    folder.mkdir()
    pq.write_table(pa.table({"video_id": ["a"], "start_frame": ["not a number"]}), folder / "part-x.parquet")
    with pytest.raises(ManifestError, match=r"part-x\.parquet.*missing column 'shot_id'"):
        read_table(tmp_path, "shots")
    with pytest.raises(ManifestError, match="does not exist"):
        read_table(tmp_path, "videos")


def test_html_report_shows_keyframes(ray_local, tmp_path, multi_shot_video):
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path) == 0
    page = html_report(out).read_text()
    # every shot shows its keyframe: as an image, or as the poster of its playable preview
    assert page.count("<img") + page.count("<video class=preview") == len(read_table(out, "shots"))
    assert "keyframes/" in page and page.count("poster='") == page.count("<video class=preview")


def write_video_with_a_dark_shot(path, fps=24, size=(160, 120)):
    """Three 48-frame shots: a bright one, a nearly black one (a held fade), a bright one."""
    import av
    import numpy as np

    rng = np.random.default_rng(3)
    colours = [(200, 120, 60), (6, 5, 8), (60, 160, 210)]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        for colour in colours:
            for _ in range(48):
                image = np.clip(np.array(colour, np.float32) + rng.normal(0, 2, (size[1], size[0], 3)), 0, 255)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def test_a_dark_shot_filter_is_one_rule_in_the_list_and_flags_dark_shots_before_embedding(ray_local, tmp_path):
    from curation.config import CurationConfig
    from curation.shot_filters import FILTERS, ShotEvidence, filter_reason, too_dark

    assert too_dark in FILTERS
    off = CurationConfig(output=tmp_path / "o")  # the default: off, whatever the luma
    assert filter_reason(ShotEvidence(0, 48, 2.0, False, [1.0, 2.0]), off) is None
    video = write_video_with_a_dark_shot(tmp_path / "dark.mp4")
    out = tmp_path / "out"
    assert run_job(out, video, extra=["--min-mean-luma", "30", "--min-shot-seconds", "1"]) == 0
    shots = read_table(out, "shots").sort_values("start_frame")
    assert shots["start_frame"].tolist() == [0, 48, 96]
    assert shots["status"].tolist() == ["ok", "filtered", "ok"]
    reason = shots["filter_reason"].iloc[1]
    assert reason.startswith("darker than --min-mean-luma 30 (mean luma ") and float(reason.split()[-3]) < 15
    embedded = set(read_table(out, "shot_embeddings")["shot_id"])
    assert embedded == set(shots.loc[shots["status"] == "ok", "shot_id"])  # the dark shot is never embedded
