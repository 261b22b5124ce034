"""Tests of `manifests/remove.py`: a video leaves every table at once (and its keyframes), by id or
by source path; the other videos stay as they were."""

from __future__ import annotations

from manifests import read_table
from manifests.__main__ import main
from manifests.remove import remove_videos
from tests.support.jobs import run_job


def test_remove_takes_a_video_out_of_every_table_and_keeps_the_others(ray_local, tmp_path, multi_shot_video,
                                                                      long_video, capsys):  # fmt: skip
    out = tmp_path / "out"
    assert run_job(out, multi_shot_video.path, long_video.path) == 0
    videos = read_table(out, "videos")
    gone = videos[videos["source_path"] == str(multi_shot_video.path)]["video_id"].iloc[0]
    keyframes = read_table(out, "shots").query("video_id == @gone")["keyframe_path"].tolist()
    before = {name: read_table(out, name) for name in ("videos", "clips", "shots", "shot_embeddings", "combinations")}
    assert all(len(t[t["video_id"] == gone]) for name, t in before.items() if name != "combinations")

    assert main(["remove", str(out), "--video", str(multi_shot_video.path)]) == 0  # by its source path
    said = capsys.readouterr().out
    assert f"removed 1 video(s): {gone}" in said and "keyframes removed: " in said
    for name, table in before.items():
        after = read_table(out, name)
        assert not (after["video_id"] == gone).any(), name
        kept = table[table["video_id"] != gone].reset_index(drop=True)
        assert after.reset_index(drop=True).equals(kept), name
    assert keyframes and not any((out / k).exists() for k in keyframes)
    assert remove_videos(out, [gone]).unknown == [gone]  # already gone: nothing happens twice


def test_an_unknown_video_is_said_and_exits_1(tmp_path, capsys):
    from manifests import write_part
    from manifests.schema import VideoRecord

    write_part(tmp_path, "videos", "a", [VideoRecord(video_id="a", source_path="/a.mp4", status="ok")])
    assert main(["remove", str(tmp_path), "--video", "nope"]) == 1
    assert "not in this manifest: nope" in capsys.readouterr().out
    assert len(read_table(tmp_path, "videos")) == 1


def test_a_keyframe_path_pointing_outside_the_manifest_is_never_deleted(tmp_path):
    from manifests import write_part
    from manifests.schema import VideoRecord
    from tests.support.manifests import shot

    victim = tmp_path / "victim.jpg"
    victim.write_bytes(b"keep me")
    manifest = tmp_path / "m"
    write_part(manifest, "videos", "v", [VideoRecord(video_id="v", source_path="/v.mp4", status="ok")])
    write_part(manifest, "shots", "v", [shot("v", 0) | {"keyframe_path": "../victim.jpg"},
                                        shot("v", 1) | {"keyframe_path": str(victim)}])  # fmt: skip
    result = remove_videos(manifest, ["v"])
    assert result.removed == {"v": "/v.mp4"} and result.keyframes == 0 and victim.read_bytes() == b"keep me"
    assert read_table(manifest, "shots").empty
