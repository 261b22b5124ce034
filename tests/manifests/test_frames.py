"""Tests of `manifests/frames.py`: reading a shot's frames, frame-exact by PTS, from its source video
(PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from curation.config import DetectorConfig
from curation.cuts import shots_from_cuts
from curation.detect import detect_clip
from curation.samples import write_synthetic_video
from curation.split import plan_clips
from manifests.frames import open_video, read_shot_frames
from manifests.probe import ProbeError, probe


def decode_all(path) -> list[np.ndarray]:
    with open_video(path) as (container, stream):
        return [f.to_ndarray(format="rgb24") for f in container.decode(stream)]


def write_with_cover(path: Path, frames: int = 30) -> None:
    """A real H.264 stream after a one-frame MJPEG cover picture (MKV keeps the cover as stream 0)."""
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 48, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        image = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 200, np.uint8), format="rgb24")
        for packet in [*cover.encode(image.reformat(format="yuvj420p")), *cover.encode(None)]:
            container.mux(packet)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 8, np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)


def _convert_in_child(path, queue):
    from manifests.frames import iter_frames, open_video, to_rgb

    with open_video(path) as (container, stream):
        frame = next(iter(iter_frames(container, stream)))
    queue.put(to_rgb(frame, 0, 160).shape)


def test_raw_h264_streams_without_timestamps_are_cut_and_read_by_frame_order(tmp_path):
    video = write_synthetic_video(tmp_path / "raw.h264", [30, 25, 35], fps=24.0, size=(64, 48), seed=4)
    facts = probe(str(video.path))
    assert not facts.pts_reliable and facts.num_frames == 90
    (window,) = plan_clips(facts.num_frames, facts.fps, 10.0, 0)
    result = detect_clip(str(video.path), window, facts.pts, facts.fps, 0, DetectorConfig(),
                         thumbnail_every=10, thumbnail_max_side=64, seekable=False)  # fmt: skip
    assert result.frames_decoded == 90 and result.thumbnails
    assert [abs(a - b) <= 1 for a, b in zip(result.cuts, video.cuts)] == [True, True]
    start, end = shots_from_cuts(result.cuts, facts.num_frames, 15)[1]
    shot = {"source_path": str(video.path), "num_frames": end - start, "start_frame": start, "start_pts": None,
            "end_pts": None, "shot_id": "s1"}  # fmt: skip
    frames = read_shot_frames(shot, indices=[0, 5])
    every = decode_all(video.path)
    assert np.array_equal(frames[0], every[start]) and np.array_equal(frames[1], every[start + 5])


@pytest.mark.parametrize("suffix", [".mkv", ".mov"])
def test_the_real_video_stream_is_chosen_over_cover_art(tmp_path, suffix):
    path = tmp_path / f"cover{suffix}"
    write_with_cover(path)
    facts = probe(str(path))
    assert facts.num_frames == 30 and facts.codec == "h264"
    with av.open(str(path)) as container:
        assert container.streams.video[facts.video_stream].codec_context.name == "h264"
    assert facts.video_record("ok")["video_stream"] == facts.video_stream


def test_a_still_image_is_a_clear_failure(tmp_path):
    import cv2

    fake = tmp_path / "picture.mp4"
    ok, png = cv2.imencode(".png", np.zeros((48, 64, 3), np.uint8))
    fake.write_bytes(png.tobytes())
    with pytest.raises(ProbeError, match="still image"):
        probe(str(fake))


def test_a_forked_data_loader_worker_converts_frames_after_its_parent_did(tmp_path):
    """A parent that converted frames (its swscale context has threads) forks a data-loader worker:
    the worker's conversion finishes instead of waiting forever for threads the fork did not copy."""
    import multiprocessing

    from manifests.frames import iter_frames, open_video, to_rgb

    video = write_synthetic_video(tmp_path / "v.mp4", [12], size=(640, 480))
    with open_video(video.path) as (container, stream):
        to_rgb(next(iter(iter_frames(container, stream))), 0, 160)  # the parent's context now exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_convert_in_child, args=(str(video.path), queue))
    child.start()
    child.join(60)
    hung = child.is_alive()
    child.kill()
    assert not hung and queue.get(timeout=5) == (120, 160, 3)


def test_a_source_on_an_object_store_that_cannot_be_read_is_one_clear_error(monkeypatch):
    from manifests import frames

    class NoCredentialsError(Exception):  # what botocore raises without credentials (not an OSError)
        pass

    def refuse(path, *args, **kwargs):
        raise NoCredentialsError("Unable to locate credentials")

    monkeypatch.setattr(frames, "open_input", refuse)
    shot = {"source_path": "s3://films/a.mp4", "num_frames": 10, "shot_id": "a_0000000"}
    with pytest.raises(frames.VideoReadError, match=r"s3://films/a.mp4: cannot read it from the object store "
                       r"\(NoCredentialsError: Unable to locate credentials\); set credentials"):  # fmt: skip
        frames.read_shot_frames(shot, indices=[0])
