"""Tests of `curation/measures.py`: samples sliced per shot, summaries in list order (a later
measure reads an earlier one's), and the job's measures taken in the detection pass."""

from __future__ import annotations

from curation.measures import Measure, Samples, ShotSpan, columns_of, merged, summarise


class _Count(Measure):
    name, columns = "count", ("count",)

    def summarise(self, samples, shot):
        return {"count": len(samples)}


class _Double(Measure):
    name, columns = "double", ("double",)

    def summarise(self, samples, shot):
        return {"double": 2 * shot.columns["count"]}  # reads the measure before it


def test_summaries_slice_each_measure_and_run_in_order():
    class Result:
        def __init__(self, samples):
            self.samples = samples

    samples = merged([Result({"count": {1: "a", 5: "b"}}), Result({"count": {9: "c"}})], ["count", "double"])
    assert samples["count"].between(0, 9) == ["a", "b"] and samples["double"].between(0, 99) == []
    got = summarise([_Count(), _Double()], samples, ShotSpan(0, 10, 64, 48, 0))
    assert got == {"count": 3, "double": 6}
    assert columns_of([_Count(), _Double()]) == ("count", "double")
    assert Samples({3: 1, 1: 2}).between(1, 3) == [2]


def test_the_job_measures_fill_their_columns_from_one_decode_pass(tmp_path, long_video):
    from curation.config import CurationConfig
    from curation.detect import detect_clip
    from curation.run import job_measures
    from curation.split import ClipWindow
    from manifests.probe import probe as probe_video
    from manifests.schema import SIGNAL_COLUMNS

    config = CurationConfig(output=tmp_path)
    measures = job_measures(config)
    assert set(columns_of(measures)) <= set(SIGNAL_COLUMNS)
    probe = probe_video(str(long_video.path))
    window = ClipWindow(0, 0, probe.num_frames, 0, probe.num_frames)
    result = detect_clip(str(long_video.path), window, probe.pts, probe.fps, 0, config.shots.detector,
                         thumbnail_every=12, thumbnail_max_side=64, measures=measures)  # fmt: skip
    from curation.motion import STRIDE

    read = set(result.samples["motion"])  # every STRIDEth frame (frame 0, an I-frame, has no vectors)
    assert set(range(STRIDE, probe.num_frames, STRIDE)) <= read <= set(range(0, probe.num_frames, STRIDE))
    assert sorted(result.samples["bars"]) == sorted(result.thumbnails)  # at the keyframe samples
    values = summarise(measures, merged([result], [m.name for m in measures]), ShotSpan(0, 50, probe.width,
                       probe.height, probe.rotation))  # fmt: skip
    assert values["motion_source"] == "motion_vectors" and values["motion_mean"] > 0
    assert (values["crop_w"], values["crop_h"]) == (probe.width, probe.height)
    assert values["mean_luma"] > 0 and values["signatures"].shape[1] == 64 * 36


def test_a_filter_with_its_own_measurement_is_one_file_and_one_list_entry(ray_local, tmp_path, monkeypatch):
    import numpy as np

    from curation import run
    from curation.samples import write_frames
    from manifests import read_table
    from tests.support.extra_filter import too_red
    from tests.support.jobs import curate_one

    monkeypatch.setattr(run, "SHOT_FILTERS", [*run.SHOT_FILTERS, too_red])  # the one list entry
    rng = np.random.default_rng(0)
    frames = []
    for colour in ((40, 160, 60), (220, 30, 30), (40, 60, 200)):  # green, red and blue shots
        frames += [np.clip(np.array(colour) + rng.normal(0, 3, (64, 96, 3)), 0, 255).astype(np.uint8)
                   for _ in range(48)]  # fmt: skip
    video = type("V", (), {"path": write_frames(tmp_path / "rgb.mp4", frames, 24.0, crf=18)})
    assert curate_one(tmp_path / "out", video, "--min-shot-seconds", "1", "--no-text", "--min-motion", "0") == 0
    shots = read_table(tmp_path / "out", "shots").sort_values("start_frame")
    reasons = shots["filter_reason"].fillna("ok").tolist()
    assert reasons[1].startswith("red: redness") and reasons[0] == reasons[2] == "ok", reasons
