"""Hostile inputs and faults: a lock on the output, row checks before training, the Gemini key kept
to the process that sends requests, dangling combinations, pandas round trips, damaged files,
bounded re-asks. Each test failed on the code before its fix."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from manifests import read_table
from manifests.io import ManifestError
from tests.conftest import CLIP_MINUTES
from tests.test_training import CONFIG, manifest  # noqa: F401  (fixture: a curated, captioned manifest)

REPO = Path(__file__).resolve().parent.parent
SECRET = "hostile-key-1a2b3c4d5e6f"


def job(out, *inputs, extra=()):
    from curation.run import main

    flags = [a for path in inputs for a in ("--input", str(path))]
    return main([*flags, "--output", str(out), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video",
                 "--min-relevance", "-10", *extra])  # fmt: skip


# --- 1. one job per output ---------------------------------------------------------------------


def hold_lock(folder: Path) -> subprocess.Popen:
    code = ("import sys, time\nfrom manifests.lock import OutputLock\n"
            f"OutputLock({str(folder)!r}, 'curation job').acquire()\nprint('held', flush=True)\ntime.sleep(120)\n")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_job_on_one_output_is_refused_and_a_dead_holders_lock_is_taken_over(
    ray_local, tmp_path, multi_shot_video, capsys
):
    out = tmp_path / "out"
    holder = hold_lock(out)
    try:
        assert job(out, multi_shot_video.path) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and socket.gethostname() in err and "in use by another curation job" in err
        assert not (out / "videos.parquet").exists()  # it did nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # the holder dies without releasing anything
        holder.wait()
    assert job(out, multi_shot_video.path) == 0  # the stale lock is simply free
    assert len(read_table(out, "shots")) == len(multi_shot_video.cuts) + 1


def test_two_processes_racing_for_one_lock_get_exactly_one(tmp_path):
    code = ("import sys\nfrom manifests.lock import OutputLock, OutputLocked\n"
            f"try:\n    OutputLock({str(tmp_path)!r}).acquire(); print('won', flush=True); sys.stdin.read()\n"
            "except OutputLocked:\n    print('refused', flush=True)\n")  # fmt: skip
    racers = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True) for _ in range(4)]  # fmt: skip
    answers = sorted(r.stdout.readline().strip() for r in racers)
    for racer in racers:
        racer.communicate("")
    assert answers == ["refused"] * 3 + ["won"]


# --- 2. row checks at the door of read_table and training --------------------------------------


def damaged_copy(manifest, tmp_path, table: str, change) -> Path:  # noqa: F811
    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    part = sorted(glob.glob(str(copy / f"{table}.parquet" / "part-*.parquet")))[0]
    frame = pd.read_parquet(part)
    change(frame)
    frame.to_parquet(part)
    return copy


def swap(frame):
    frame.loc[0, "start_frame"], frame.loc[0, "end_frame"] = frame.loc[0, "end_frame"], frame.loc[0, "start_frame"]


def triple(frame):
    frame.loc[0, "num_frames"] = 3 * frame.loc[0, "num_frames"]


def set_value(column, value):
    def change(frame):
        frame[column] = frame[column].astype(object)
        frame.loc[0, column] = value

    return change


GARBAGE = {
    "start and end swapped": ("shots", swap, "end_frame must be after start_frame"),
    "num_frames tripled": ("shots", triple, "num_frames must equal end_frame - start_frame"),
    "fps zero": ("shots", set_value("fps", 0.0), "fps must be a positive number"),
    "fps negative": ("shots", set_value("fps", -24.0), "fps must be a positive number"),
    "ok caption null": ("shot_captions", set_value("caption", None), "a caption with status ok must be non-empty"),
    "ok captions missing": ("annotations", set_value("captions", None), "needs one non-empty caption per shot"),
}


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


# --- 6 and 7. what pandas writes, NaN, damaged pages -------------------------------------------


def test_a_plain_pandas_round_trip_reads_back_the_same_rows(manifest, tmp_path):  # noqa: F811
    from manifests.schema import TABLES

    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    for part in glob.glob(str(copy / "*.parquet" / "part-*.parquet")):
        pd.read_parquet(part).to_parquet(part)  # no edit: what a user who inspects and saves does
    for name in TABLES:
        before, after = read_table(manifest, name), read_table(copy, name)
        pd.testing.assert_frame_equal(after, before, check_dtype=True)


def test_a_nan_in_a_non_nullable_column_is_named(manifest, tmp_path):  # noqa: F811
    broken = damaged_copy(manifest, tmp_path, "shots", set_value("shot_index", float("nan")))
    with pytest.raises(ManifestError, match=r"row 0 \(shot_id .*\) column 'shot_index' is null"):
        read_table(broken, "shots")


def test_a_damaged_data_page_is_a_clear_error_in_reading_training_and_inspect(manifest, tmp_path, capsys):  # noqa: F811
    from manifests.__main__ import main as manifests_main
    from training.train import main as train_main

    copy = tmp_path / "copy"
    shutil.copytree(manifest, copy)
    part = Path(sorted(glob.glob(str(copy / "shots.parquet" / "part-*.parquet")))[0])
    data = bytearray(part.read_bytes())
    for offset in range(200, min(len(data) - 200, 1400)):  # the first data pages; the footer stays intact
        data[offset] ^= 0x5A
    part.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="is damaged and cannot be read"):
        read_table(copy, "shots")
    code = train_main(["--config", str(CONFIG), f"data.manifest={copy}", f"run.output={tmp_path / 'run'}",
                       f"model.path={tmp_path / 'model'}", "data.allow_uncaptioned=false"])  # fmt: skip
    assert code == 2 and "is damaged" in capsys.readouterr().err
    assert manifests_main(["inspect", str(copy)]) == 1
    captured = capsys.readouterr()
    assert "is damaged" in captured.err and "Traceback" not in captured.err + captured.out


# --- 3. the key stays in the process that sends requests ---------------------------------------


def environ_of(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_no_ray_process_of_the_job_sees_the_gemini_key(tmp_path, multi_shot_video):
    from curation.local_ray import descendants
    from tests.fake_gemini import FakeGemini

    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GOOGLE_API_KEY")}
    env |= {"GEMINI_API_KEY": SECRET, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}  # short: sockets
    leaks, seen = set(), set()
    with FakeGemini() as server:
        command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output",
                   str(tmp_path / "out"), "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance",
                   "-10", "--gemini-base-url", server.url, "--gemini-input", "video", "--num-cpus", "2"]  # fmt: skip
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while driver.poll() is None:
            for pid in descendants(driver.pid):  # Ray's raylet, GCS, workers, agents: all started by the job
                seen.add(pid)
                if SECRET.encode() in environ_of(pid):
                    leaks.add(pid)
            time.sleep(0.1)
        out, err = driver.communicate()
    assert driver.returncode == 0, err[-3000:]
    assert len(seen) >= 3  # Ray's processes were there to look at
    assert not leaks, f"{len(leaks)} of {len(seen)} Ray processes had the key in their environment"
    assert server.requests and all(r["headers"]["x-goog-api-key"] == SECRET for r in server.requests)
    assert SECRET not in out + err


# --- 4. a combination whose shots are gone -----------------------------------------------------


@pytest.mark.slow
def test_a_dangling_combination_is_a_failed_row_and_the_run_goes_on(ray_local, tmp_path, multi_shot_video):
    from manifests.io import remove_part

    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(multi_shot_video.path, videos / name)
    (videos / "b.mp4").write_bytes((videos / "b.mp4").read_bytes() + b"\0")  # another file, another video id
    out = tmp_path / "out"
    assert job(out, videos) == 0
    rows = read_table(out, "videos")
    moved = rows[rows["source_path"].str.endswith("a.mp4")]["video_id"].iloc[0]
    remove_part(out, "shots", moved)  # its shots are gone ...
    (videos / "a.mp4").rename(tmp_path / "a-moved.mp4")  # ... and its source moved away
    for _ in range(2):  # every re-run, not only the first
        assert job(out, videos) == 0
        notes = read_table(out, "annotations")
        dangling = notes[notes["video_id"] == moved]
        assert len(dangling) and (dangling["status"] == "failed").all()
        assert dangling["error"].str.contains("is not in shots.parquet").all()
        assert (dangling["error_stage"] == "media").all()
        assert (notes[notes["video_id"] != moved]["status"] == "unannotated").all()  # the others go on


# --- 8. re-asks quote a bounded excerpt --------------------------------------------------------


def test_a_huge_invalid_reply_is_not_echoed_back_in_every_reask():
    from tests.fake_gemini import FakeGemini, reply
    from tests.test_annotation import annotator, parts

    huge = "not json " * 600_000  # 5.4 MB of garbage
    with FakeGemini(lambda i, body: reply(huge)) as server:
        result = annotator(server, max_reasks=2).annotate(parts(2), 2)
    assert result.status == "invalid" and len(server.requests) == 3
    sizes = [len(str(r["body"])) for r in server.requests]
    assert max(sizes) < sizes[0] + 20_000, sizes  # each re-ask adds a bounded excerpt, not the reply
    assert "characters cut" in str(server.requests[1]["body"]["contents"])
    assert len(result.error) < 10_000


# --- 7. checkpoint JSON that parses but has the wrong shape --------------------------------------

CHECKPOINT_DAMAGE = {
    "trainer state is a list": ("trainer_state.json", []),
    "marker files is a list": ("complete.json", {"step": 4, "files": ["mp_rank_00_model_states.pt"]}),
    "rng of the wrong shape": ("rng_rank0.json", {"python": [3, [1, 2], None], "numpy": [], "torch": [1]}),
    "trainer state step is text": ("trainer_state.json", {"step": "4", "consumed": 4}),
}


@pytest.mark.slow
def test_wrongly_shaped_checkpoint_json_falls_back_to_the_older_checkpoint(manifest, tmp_path, capsys):  # noqa: F811
    import json

    from model.tiny import build_tiny_model
    from tests.test_training import config_for
    from training.train import train

    model = build_tiny_model(tmp_path / "model")
    overrides = ["data.stage=sft", "data.scenes=3", "run.save_every=2", "optim.lr=1e-3"]
    straight = [
        h["loss"] for h in train(config_for(manifest, model, tmp_path / "a", "run.max_steps=4", *overrides))["history"]
    ]
    base = tmp_path / "base"
    train(config_for(manifest, model, base, "run.max_steps=4", *overrides))
    for case, (name, payload) in CHECKPOINT_DAMAGE.items():
        run = tmp_path / case.replace(" ", "-")
        shutil.copytree(base, run)
        (run / "checkpoints" / "step_4" / name).write_text(json.dumps(payload))
        if name != "complete.json":  # keep the marker's recorded size true: the damage is the shape
            marker = json.loads((run / "checkpoints" / "step_4" / "complete.json").read_text())
            marker["files"][name] = (run / "checkpoints" / "step_4" / name).stat().st_size
            (run / "checkpoints" / "step_4" / "complete.json").write_text(json.dumps(marker))
        capsys.readouterr()
        history = train(config_for(manifest, model, run, "run.max_steps=4", *overrides))["history"]
        out = capsys.readouterr().out
        assert "resumed from step_2; newer checkpoints could not be loaded" in out and name in out, case
        assert [h["loss"] for h in history] == straight, case


# --- 7. prompt files and --expand-from latents, refused before any model loads -------------------


@pytest.mark.parametrize(
    "content,message",
    [
        (b'["caf\xe9 au lait"]', "not UTF-8 text"),
        (
            b'{"characters": [{"name": "Actor1", "description": null}], "scenes": ["Actor1 walks"]}',
            "non-empty description",
        ),
        (b'{"background": 3, "scenes": ["a man walks"]}', "'background' must be text"),
    ],
)
def test_bad_prompt_files_are_one_clear_line(tmp_path, capsys, content, message):
    from model.generate import main

    prompts = tmp_path / "p.json"
    prompts.write_bytes(content)
    assert main(["--model", str(tmp_path / "no-model"), "--prompts", str(prompts), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.fixture(scope="module")
def earlier_output(tmp_path_factory):
    """A tiny model and a two-scene output of it, to expand from."""
    from model.generate import main
    from model.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("expand")
    model = build_tiny_model(root / "model")
    prompts = root / "p.json"
    prompts.write_text('["a man walks", "a dog runs"]')
    size = ["--height", "32", "--width", "32", "--num-frames", "9", "--steps", "1", "--dtype", "fp32"]
    assert main(["--model", str(model), "--prompts", str(prompts), "--out", str(root / "story"), *size]) == 0
    return model, root / "story", size


def damage_nan(latents):
    latents[:] = float("nan")
    return latents


LATENT_DAMAGE = {
    "corrupt": (None, "latents.safetensors cannot be read"),
    "fewer frames": (lambda x: x[:, :4].contiguous(), "latents have shape (1, 4, 4, 8, 8)"),
    "other channels": (lambda x: x[:, :, :2].contiguous(), "latents have shape (1, 6, 2, 8, 8)"),
    "all NaN": (damage_nan, "NaN or infinite values"),
}


@pytest.mark.parametrize("case", list(LATENT_DAMAGE))
def test_bad_expansion_latents_are_refused_before_the_model_loads(earlier_output, tmp_path, capsys, monkeypatch, case):
    from safetensors.torch import load_file, save_file

    from model.generate import main
    from model.pipeline import Mask2DiTPipeline

    model, story, size = earlier_output
    copy = tmp_path / "story"
    shutil.copytree(story, copy)
    change, message = LATENT_DAMAGE[case]
    if change is None:
        (copy / "latents.safetensors").write_bytes(b"\0" * 64)
    else:
        save_file({"latents": change(load_file(copy / "latents.safetensors")["latents"])}, copy / "latents.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the latents were checked")

    monkeypatch.setattr(Mask2DiTPipeline, "from_pretrained", classmethod(refuse))
    more = tmp_path / "more.json"
    more.write_text('["a cat sleeps"]')
    code = main(["--model", str(model), "--prompts", str(more), "--expand-from", str(copy), "--out",
                 str(tmp_path / "out"), *size])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists()  # no black scene written


# --- 9. the importer: BOMs, paths outside --root, duplicate rows, repeated shots, huge captions ---


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    from curation.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("clips")
    for i in range(3):
        write_synthetic_video(root / "data" / f"{i}.mp4", [40], fps=24.0, size=(64, 48), seed=30 + i)
    write_synthetic_video(root / "secret.mp4", [40], fps=24.0, size=(64, 48), seed=40)  # outside --root
    return root


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


# --- 5. a resumed run embeds the frames an uninterrupted one does --------------------------------


@pytest.mark.slow
def test_a_resumed_run_embeds_the_same_frames_as_an_uninterrupted_one(ray_local, tmp_path, long_video):
    import numpy as np

    from manifests.io import remove_part

    out = tmp_path / "out"
    common = ("--detector", "adaptive")
    assert job(out, long_video.path, extra=common) == 0
    straight = read_table(out, "shot_embeddings").set_index("shot_id")
    long_shots = read_table(out, "shots").query("num_frames > 24")
    assert len(long_shots)  # shots long enough that the pass had to thin its candidates
    # Killed after the shots were committed but before the embeddings: the re-run re-decodes them.
    video_id = read_table(out, "videos")["video_id"].iloc[0]
    remove_part(out, "shot_embeddings", video_id)
    assert job(out, long_video.path, extra=common) == 0
    resumed = read_table(out, "shot_embeddings").set_index("shot_id")
    assert sorted(resumed.index) == sorted(straight.index)
    for shot_id in straight.index:
        assert list(resumed.loc[shot_id, "frames"]) == list(straight.loc[shot_id, "frames"]), shot_id
        a = np.asarray(resumed.loc[shot_id, "embedding"], np.float32)
        b = np.asarray(straight.loc[shot_id, "embedding"], np.float32)
        assert np.abs(a - b).max() < 2e-3, shot_id


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_after_a_killed_driver_the_next_run_leaves_none_of_its_ray_processes(tmp_path, multi_shot_video):
    import json

    from curation.local_ray import RECORD, _start_time

    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(out),
               "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / RECORD).exists():
        assert driver.poll() is None and time.time() < deadline, "the job ended before Ray was up"
        time.sleep(0.1)
    time.sleep(1.0)
    recorded = json.loads((out / RECORD).read_text())
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(2.0)
    survivors = [e["pid"] for e in recorded if _start_time(e["pid"]) == e["start"]]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    still = [p for p in survivors if _start_time(p) is not None]  # some exit late on their own
    if survivors:  # Ray's agents outlived the killed driver: the next run stopped those still there
        assert "Ray processes left behind by an earlier run" in done.stdout or not still
    assert not [p for p in survivors if _start_time(p) is not None]
    assert not (out / RECORD).exists()  # a clean end leaves no record


# --- 8. limits: a clear memory message before Ray starts ----------------------------------------


def limited(gib: float):
    import resource

    def apply():
        size = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    return apply


@pytest.mark.slow
@pytest.mark.parametrize("gib", [1.0, 3.5])
def test_under_ulimit_v_the_job_says_what_to_raise_or_sizes_its_object_store(tmp_path, multi_shot_video, gib):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    command = [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(tmp_path / "o"),
               "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10"]  # fmt: skip
    began = time.time()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          preexec_fn=limited(gib))  # fmt: skip
    if gib < 2:
        assert done.returncode == 2 and "address-space limit (ulimit -v) is 1.00 GiB" in done.stderr
        assert "Traceback" not in done.stderr and time.time() - began < 30  # said at once, no startup timeout
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert len(read_table(tmp_path / "o", "shots")) == len(multi_shot_video.cuts) + 1


@pytest.mark.slow
def test_a_kill_during_annotation_pays_again_at_most_the_requests_in_flight(tmp_path, multi_shot_video):
    from tests.fake_gemini import FakeGemini, reply, shots_in, valid_reply

    concurrency, reasks = 2, 1
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "GOOGLE_API_KEY")}
    env |= {"GEMINI_API_KEY": SECRET, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    slow = lambda i, body: (*reply(valid_reply(shots_in(body))), 1.0)  # noqa: E731  (each reply takes 1 s)

    def command_for(out, url):
        return [sys.executable, "curation/run.py", "--input", str(multi_shot_video.path), "--output", str(out),
                "--clip-minutes", f"{CLIP_MINUTES}", "--within", "video", "--min-relevance", "-10", "--caption-shots",
                "--gemini-base-url", url, "--gemini-concurrency", str(concurrency), "--gemini-max-reasks", str(reasks),
                "--gemini-backoff", "0.01"]  # fmt: skip

    with FakeGemini(slow) as server:
        command = command_for(tmp_path / "o", server.url)
        with FakeGemini(slow) as reference:  # an uninterrupted run: what annotating everything costs
            once = command_for(tmp_path / "ref", reference.url)
            assert subprocess.run(once, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
            needed = len(reference.requests)
        driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 200
        while len(server.requests) < needed // 2:
            assert driver.poll() is None and time.time() < deadline
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)  # mid-annotation, replies in flight
        driver.wait()
        assert subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=300).returncode == 0
    paid_again = len(server.requests) - needed
    assert 0 <= paid_again <= concurrency * (1 + reasks), (len(server.requests), needed)
    assert (read_table(tmp_path / "o", "shot_captions")["status"] == "ok").all()
