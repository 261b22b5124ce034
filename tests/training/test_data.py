"""Tests of `training/data.py`: training samples from curation manifests: checked up front, drawn
deterministically per sample index."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests import read_table, write_part
from manifests.io import ManifestError
from tests.support.jobs import damaged_copy, set_value
from tests.support.training import CONFIG, config_for
from training.config import DataConfig, load_config
from training.data import PRETRAIN_KEEP, DataError, PretrainSampler, Scene, draw_windows, load_samples, official_window
from training.train import main


def data_config(stage, **extra):
    return DataConfig(manifest=Path("unused"), stage=stage, num_frames=49, **extra)


def swap(frame):
    frame.loc[0, "start_frame"], frame.loc[0, "end_frame"] = frame.loc[0, "end_frame"], frame.loc[0, "start_frame"]


def triple(frame):
    frame.loc[0, "num_frames"] = 3 * frame.loc[0, "num_frames"]


GARBAGE = {
    "start and end swapped": ("shots", swap, "end_frame must be after start_frame"),
    "num_frames tripled": ("shots", triple, "num_frames must equal end_frame - start_frame"),
    "fps zero": ("shots", set_value("fps", 0.0), "fps must be a positive number"),
    "fps negative": ("shots", set_value("fps", -24.0), "fps must be a positive number"),
    "ok caption null": ("shot_captions", set_value("caption", None), "a caption with status ok must be non-empty"),
    "ok captions missing": ("annotations", set_value("captions", None), "needs one non-empty caption per shot"),
}


def scenes_of(videos: int, shots: int) -> list[list[Scene]]:
    return [
        [Scene({"video_id": f"v{v}", "shot_id": f"v{v}s{s}"}, "", 0, 1)] for v in range(videos) for s in range(shots)
    ]


def test_pretrain_windows_are_stride_3_inside_5_to_95_percent_with_random_starts():
    config = data_config("pretrain")
    frames = 300
    end = int(PRETRAIN_KEEP[1] * frames)
    starts = set()
    for seed in range(300):
        start, stride = official_window(frames, config, np.random.default_rng(seed))
        assert stride == 3 and start >= int(PRETRAIN_KEEP[0] * end) and start + 48 * 3 < end
        starts.add(start)
    assert len(starts) > 50  # random, not a fixed window
    # Too short for stride 3 inside the window: the largest stride that fits the shot.
    assert official_window(120, config, np.random.default_rng(0))[1] == 2


def test_sft_windows_take_the_largest_stride_that_fits():
    config = data_config("sft")
    for frames, stride in ((400, 3), (145, 3), (144, 2), (97, 2), (96, 1), (49, 1)):
        start, got = official_window(frames, config, np.random.default_rng(frames))
        assert got == stride and 0 <= start <= frames - 1 - 48 * stride
    assert official_window(48, config, np.random.default_rng(0)) is None


def test_windows_are_a_pure_function_of_seed_and_sample_index():
    from training.data import Scene

    config = data_config("sft")
    scenes = [
        Scene({"num_frames": 300, "shot_id": "a"}, "", 0, 1),
        Scene({"num_frames": 200, "shot_id": "b"}, "", 0, 1),
    ]
    first = draw_windows(scenes, config, seed=42, index=7)
    assert first == draw_windows(scenes, config, seed=42, index=7)
    assert first != draw_windows(scenes, config, seed=42, index=8)
    middle = data_config("sft", frame_window="middle")
    assert draw_windows(scenes, middle, seed=42, index=7) == scenes


@pytest.mark.parametrize("case", list(GARBAGE))
def test_training_refuses_garbage_rows_naming_table_row_and_column(manifest, tmp_path, case, capsys):  # noqa: F811
    from training.train import main

    table, change, message = GARBAGE[case]
    broken = damaged_copy(manifest, tmp_path, table, change)
    with pytest.raises(ManifestError, match=message) as caught:
        read_table(broken, table)
    assert f"table {table!r} row 0" in str(caught.value) and "part-" in str(caught.value)
    stage = "sft" if table == "annotations" else "pretrain"
    code = main(["--config", str(CONFIG), f"data.manifest={broken}", f"run.output={tmp_path / 'run'}",
                 f"model.path={tmp_path / 'model'}", f"data.stage={stage}", "data.scenes=3",
                 "data.allow_uncaptioned=false"])  # fmt: skip
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()  # nothing trained


def test_bad_manifests_fail_fast_naming_the_problem(tmp_path, manifest, tiny_model, capsys):
    bad = tmp_path / "bad"
    (bad / "shots.parquet").mkdir(parents=True)
    pq.write_table(pa.table({"video_id": ["a"]}), bad / "shots.parquet" / "part-a.parquet")
    (bad / "shot_captions.parquet").mkdir()
    assert main(["--config", str(CONFIG), f"data.manifest={bad}", "data.allow_uncaptioned=false",
                 f"run.output={tmp_path / 'run'}"]) == 2  # fmt: skip
    assert "missing column 'shot_id'" in capsys.readouterr().err
    with pytest.raises(DataError, match="no shot_captions.parquet: run the curation job with --caption-shots"):
        load_samples(load_config(CONFIG, [f"data.manifest={tmp_path / 'empty'}", "data.allow_uncaptioned=false"]).data)
    config = config_for(manifest, tiny_model, tmp_path / "r", "data.num_frames=401")
    with pytest.raises(DataError, match=r"(?s)0 usable .*shot shorter than 401 frames"):
        load_samples(config.data)


def test_pretrain_sampler_never_repeats_a_source_when_avoidable():
    sampler = PretrainSampler(scenes_of(videos=5, shots=3), scenes=3, seed=0)
    for index in range(500):
        sources = [s.shot["video_id"] for s in sampler(index)]
        assert len(set(sources)) == 3
    assert sampler(7) == sampler(7)  # a pure function of the index
    few = PretrainSampler(scenes_of(videos=2, shots=4), scenes=3, seed=0)
    assert all(len({s.shot["video_id"] for s in few(i)}) == 2 for i in range(100))  # one repeat, no more


def test_sft_uses_only_ok_annotations(manifest, tiny_model, tmp_path):
    config = config_for(manifest, tiny_model, tmp_path / "r", "data.stage=sft", "data.scenes=3")
    samples, report = load_samples(config.data)
    notes = read_table(manifest, "annotations")
    assert report.usable == len(samples) == int((notes["status"] == "ok").sum())
    assert all(s.caption.startswith("Actor1 (a man)") for sample in samples for s in sample)


def test_unreadable_sources_are_skipped_deterministically_and_counted(manifest, tmp_path):

    from training.data import SceneDataset
    from training.trainer import SkipCounter

    # A copy of the manifest whose first video was truncated after curation.
    copy = tmp_path / "manifest"
    shutil.copytree(manifest, copy)
    shots = read_table(copy, "shots")
    broken = Path(shots["source_path"].iloc[0])
    moved = tmp_path / "videos"
    shutil.copytree(broken.parent, moved)
    shots["source_path"] = [str(moved / Path(p).name) for p in shots["source_path"]]
    for part in (copy / "shots.parquet").glob("part-*.parquet"):
        part.unlink()
    write_part(copy, "shots", "all", shots)
    victim = moved / broken.name
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    config = config_for(copy, Path("unused"), tmp_path / "r", "data.stage=pretrain", "data.scenes=2").data
    samples, _ = load_samples(config)
    dataset = SceneDataset(config, samples, seed=0)
    items = [dataset[i] for i in range(12)]
    assert any(item["skipped"] for item in items)
    assert all(len(item["frames"]) == 2 and item["frames"][0].shape[0] == 9 for item in items)
    again = [dataset[i] for i in range(12)]
    assert [i["keys"] for i in items] == [i["keys"] for i in again]  # the same substitutes every time
    assert all(victim.name in reason for item in items for reason in item["skipped"])
    counter = SkipCounter(max_fraction=0.1, consumed=0, grace=2)
    with pytest.raises(DataError, match="could not be read"):
        for step in range(10):
            counter.add({"index": [step], "skipped": [["x: unreadable"]]}, step, verbose=False)


def test_non_finite_numbers_are_named_by_table_row_and_column(manifest, tmp_path):
    """Our writer refuses NaN in required columns; a hand-edited table can still hold infinities."""

    copy = tmp_path / "manifest"
    shutil.copytree(manifest, copy)
    shots = read_table(copy, "shots")
    shots.loc[2, "fps"] = float("inf")
    for part in (copy / "shots.parquet").glob("part-*.parquet"):
        part.unlink()
    write_part(copy, "shots", "all", shots)
    config = config_for(copy, Path("unused"), tmp_path / "r").data
    with pytest.raises(DataError, match=r"table 'shots' row 2 .*column 'fps'"):
        load_samples(config)


def test_a_row_whose_source_file_is_another_video_is_refused_before_its_frames_are_read(multi_shot_video,
                                                                                         long_video):  # fmt: skip
    from manifests.frames import VideoReadError
    from manifests.probe import fingerprint
    from training.data import SceneDataset

    dataset = SceneDataset.__new__(SceneDataset)  # only its source check: no samples needed
    dataset._sources = {}
    made_from = fingerprint(str(multi_shot_video.path))
    dataset.check_source({"source_path": str(multi_shot_video.path), "video_id": made_from})  # the right file
    with pytest.raises(VideoReadError, match="is not the video its rows were made from"):
        dataset.check_source({"source_path": str(long_video.path), "video_id": made_from})  # another file there


def test_pretraining_skips_shots_that_repeat_another_in_the_corpus(manifest, tmp_path):
    import pandas as pd

    from manifests.corpus import write_corpus_duplicates

    copy = tmp_path / "manifest"
    shutil.copytree(manifest, copy)
    config = config_for(copy, Path("unused"), tmp_path / "r", "data.stage=pretrain", "data.scenes=2").data
    before, _ = load_samples(config)
    repeat, original = before[1][0].shot["shot_id"], before[0][0].shot["shot_id"]
    write_corpus_duplicates(copy, pd.DataFrame({"shot_id": [repeat], "duplicate_of": [original],
                                                "similarity": [0.99], "embedder": ["color-layout"]}))  # fmt: skip
    after, report = load_samples(config)
    assert len(after) == len(before) - 1 and repeat not in {s[0].shot["shot_id"] for s in after}
    assert report.dropped["repeats a shot elsewhere (python -m curation.dedup)"] == 1
