"""Tests of `manifests/importer.py`: bring datasets prepared for the official Mask²DiT code into this
project's manifests."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from curation.samples import write_synthetic_video
from manifests import read_table
from manifests.__main__ import main as manifests_main
from manifests.importer import ImportFormatError, import_dataset
from manifests.store import ObjectPath
from tests.support import REPO
from tests.support.s3_server import make_bucket, upload
from training.config import DataConfig
from training.data import load_samples


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    from curation.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("official")
    for i, frames in enumerate([70, 60, 80, 65]):
        write_synthetic_video(root / "clips" / f"{i}.mp4", [frames], fps=24.0, size=(64, 48), seed=10 + i)
    (root / "clips" / "broken.mp4").write_bytes(b"not a video at all")
    return root


def write_pretrain_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["fps", "width", "height", "caption", "path", "num_frame"])
        writer.writerows(rows)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from curation.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("clips")
    for i in range(3):
        write_synthetic_video(root / "data" / f"{i}.mp4", [40], fps=24.0, size=(64, 48), seed=30 + i)
    write_synthetic_video(root / "secret.mp4", [40], fps=24.0, size=(64, 48), seed=40)  # outside --root
    return root


def test_official_pretrain_csv_imports_and_trains(clip_files, tmp_path):
    source = tmp_path / "pretrain.csv"
    write_pretrain_csv(source, [
        [24.0, 64, 48, "a red square moves", "clips/0.mp4", 70],
        [24.0, 64, 48, "a blue circle turns", "clips/1.mp4", 60],
        [24.0, 64, 48, "missing clip", "clips/nope.mp4", 50],
        [24.0, 64, 48, "a broken clip", "clips/broken.mp4", 50],
        [24.0, 64, 48, "", "clips/2.mp4", 80],
        [24.0, 64, 48, "a green bar", "clips/3.mp4", 65],
    ])  # fmt: skip
    out = tmp_path / "manifest"
    result = import_dataset(source, out, root=clip_files)
    assert result.format == "pretrain-csv" and result.shots == 3
    assert {f["where"] for f in result.failures} == {"line 4", "line 5", "line 6"}
    shots = read_table(out, "shots")
    assert sorted(shots["num_frames"]) == [60, 65, 70] and (shots["start_frame"] == 0).all()
    captions = read_table(out, "shot_captions").merge(shots[["shot_id", "source_path"]], on="shot_id")
    by_file = {Path(p).name: c for p, c in zip(captions["source_path"], captions["caption"])}
    assert by_file == {"0.mp4": "a red square moves", "1.mp4": "a blue circle turns", "3.mp4": "a green bar"}
    videos = read_table(out, "videos")
    failed = videos[videos["status"] == "failed"]
    assert len(failed) == 3 and all("pretrain.csv line" in e for e in failed["error"])
    assert any("file not found" in e for e in failed["error"])
    # Re-running gives the same manifest.
    before = {t: read_table(out, t) for t in ("videos", "shots", "shot_captions")}
    import_dataset(source, out, root=clip_files)
    for name, table in before.items():
        pd.testing.assert_frame_equal(read_table(out, name), table)
    # Training reads it with no other step.
    samples, report = load_samples(DataConfig(manifest=out, stage="pretrain", num_frames=9))
    assert report.usable == 3 and {s[0].caption for s in samples} == set(by_file.values())


def test_official_sft_json_imports_as_consecutive_windows(clip_files, tmp_path):
    source = tmp_path / "sft.json"
    story = [{"vid": f"shot{i}", "width": 64, "height": 48, "duration": 3.0, "fps": 24.0,
              "url": f"clips/{i}.mp4", "caption": f"caption {i}"} for i in range(4)]  # fmt: skip
    short = [{"url": "clips/0.mp4", "caption": "only one"}]
    source.write_text(json.dumps([{"prefix": "story", "values": story}, {"prefix": "short", "values": short},
                                  {"prefix": "broken"}]))  # fmt: skip
    out = tmp_path / "manifest"
    assert manifests_main(["import", str(source), "--root", str(clip_files), "--output", str(out)]) == 0
    combos = read_table(out, "combinations")
    shots = read_table(out, "shots").set_index("shot_id")
    order = [[Path(shots.loc[s, "source_path"]).name for s in ids] for ids in combos["shot_ids"]]
    assert sorted(order) == [["0.mp4", "1.mp4", "2.mp4"], ["1.mp4", "2.mp4", "3.mp4"]]
    notes = read_table(out, "annotations")
    assert sorted(map(list, notes["captions"])) == [["caption 0", "caption 1", "caption 2"],
                                                    ["caption 1", "caption 2", "caption 3"]]  # fmt: skip
    record = json.loads((out / "import.json").read_text())
    assert {f["where"] for f in record["failures"]} == {"entry 1", "entry 2"}
    samples, report = load_samples(DataConfig(manifest=out, stage="sft", num_frames=9, scenes=3))
    assert report.usable == 2 and [s.caption for s in samples[0]] in (["caption 0", "caption 1", "caption 2"],
                                                                      ["caption 1", "caption 2", "caption 3"])  # fmt: skip


def test_plain_path_caption_csv_and_wrong_columns(clip_files, tmp_path, capsys):
    plain = tmp_path / "openvid.csv"
    plain.write_text(f"path,caption\n{clip_files}/clips/0.mp4,a clip\n")
    assert import_dataset(plain, tmp_path / "m").format == "plain-csv"
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("file,text\na.mp4,hello\n")
    with pytest.raises(ImportFormatError, match="path,caption"):
        import_dataset(wrong, tmp_path / "m2")
    assert manifests_main(["import", str(wrong), "--output", str(tmp_path / "m3")]) == 2
    assert "neither the official pretrain CSV" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["plain", "pretrain"])
def test_csvs_with_a_byte_order_mark_import_as_their_format(clip_folder, tmp_path, kind):
    from manifests.importer import import_dataset

    source = tmp_path / f"{kind}.csv"
    header, row = (("path,caption", "0.mp4,a clip") if kind == "plain"
                   else ("fps,width,height,caption,path,num_frame", "24,64,48,a clip,0.mp4,40"))  # fmt: skip
    source.write_bytes("\ufeff".encode() + f"{header}\n{row}\n".encode())
    result = import_dataset(source, tmp_path / "m", root=clip_folder / "data")
    assert result.format == f"{kind}-csv" and result.shots == 1 and not result.failures


def test_paths_leaving_root_are_refused_unless_asked(clip_folder, tmp_path, capsys):
    from manifests.__main__ import main

    source = tmp_path / "p.csv"
    source.write_text(
        f"path,caption\n0.mp4,inside\n../secret.mp4,through dotdot\n{clip_folder / 'secret.mp4'},absolute\n"
    )
    out = tmp_path / "m"
    assert main(["import", str(source), "--root", str(clip_folder / "data"), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 clips" in printed and printed.count("is outside --root") == 2 and "--allow-outside-root" in printed
    assert read_table(out, "shots")["source_path"].str.endswith("0.mp4").all()
    assert main(["import", str(source), "--root", str(clip_folder / "data"), "--output", str(out),
                 "--allow-outside-root"]) == 0  # fmt: skip
    assert len(read_table(out, "shots")) == 2  # secret.mp4 once, named twice


def test_duplicate_rows_and_repeated_shots_are_reported_not_silently_collapsed(clip_folder, tmp_path):
    import json

    from manifests.importer import import_dataset

    source = tmp_path / "p.csv"
    source.write_text("path,caption\n0.mp4,first caption\n1.mp4,another\n0.mp4,second caption\n")
    result = import_dataset(source, tmp_path / "m", root=clip_folder / "data")
    assert result.shots == 2 and any("line 4 names" in n and "kept line 2" in n for n in result.notes)
    assert "first caption" in read_table(tmp_path / "m", "shot_captions")["caption"].tolist()
    story = [{"url": f"{name}.mp4", "caption": f"c{k}"} for k, name in enumerate(["0", "0", "0", "1", "2"])]
    sft = tmp_path / "sft.json"
    sft.write_text(json.dumps([{"prefix": "s", "values": story}]))
    result = import_dataset(sft, tmp_path / "s", root=clip_folder / "data", scenes=3)
    combos = read_table(tmp_path / "s", "combinations")
    assert all(len(set(ids)) == len(ids) for ids in combos["shot_ids"])  # never [x, x, x]
    assert len(combos) == 1 and any("repeat one file" in n for n in result.notes)


def test_a_caption_over_128_kb_is_a_failed_row_not_a_traceback(clip_folder, tmp_path):
    from manifests.importer import import_dataset

    source = tmp_path / "p.csv"
    source.write_text(f"path,caption\n0.mp4,{'x' * 140_000}\n1.mp4,fine\n")
    result = import_dataset(source, tmp_path / "m", root=clip_folder / "data")
    assert result.shots == 1 and "not a caption" in result.failures[0]["error"]


def test_import_names_its_own_arguments_and_what_url_means(tmp_path, capsys):
    from manifests.__main__ import main

    source = tmp_path / "sft.json"
    source.write_text(json.dumps([{"prefix": "s", "values": [{"url": "gone.mp4", "caption": "c"}] * 3}]))
    assert main(["import", str(source), "--output", str(tmp_path / "m")]) == 1
    printed = capsys.readouterr().out
    assert "--input" not in printed and "file not found" in printed
    manual = (REPO / "docs" / "training.md").read_text()
    assert "`url` in `sft.json`: the clip file's path" in manual


def test_the_importer_reads_its_source_and_clips_from_s3_and_writes_an_s3_manifest(s3_env, tmp_path):
    from manifests.importer import import_dataset

    make_bucket(s3_env, "imports")
    for i in range(2):
        clip = write_synthetic_video(tmp_path / f"clip{i}.mp4", [30], fps=24.0, size=(64, 48), seed=40 + i)
        upload(s3_env, clip.path, f"s3://imports/data/clips/clip{i}.mp4")
    ObjectPath("s3://imports/data/train.csv").write_text("path,caption\nclips/clip0.mp4,a man walks\n"
                                                         "clips/clip1.mp4,a dog runs\nclips/gone.mp4,missing\n")  # fmt: skip
    result = import_dataset("s3://imports/data/train.csv", "s3://imports/manifest")
    assert result.shots == 2 and len(result.failures) == 1 and "file not found" in result.failures[0]["error"]
    shots = read_table("s3://imports/manifest", "shots")
    assert sorted(shots["source_path"]) == ["s3://imports/data/clips/clip0.mp4", "s3://imports/data/clips/clip1.mp4"]
    assert set(read_table("s3://imports/manifest", "shot_captions")["caption"]) == {"a man walks", "a dog runs"}
    assert ObjectPath("s3://imports/manifest/import.json").is_file()
