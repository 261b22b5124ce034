"""Probe a video: content fingerprint, stream facts and the exact PTS of every frame."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction

import av
import numpy as np

from manifests.frames import VideoReadError, open_video
from manifests.schema import ShotRecord, Status, VideoRecord, shot_id
from manifests.store import absolute, location, open_input

_SAMPLE_BYTES = 1 << 20


class ProbeError(RuntimeError):
    """The file cannot be used as a video; the message says why and what to do."""


def fingerprint(path: str) -> str:
    """A stable id from the file's content, not its name: renamed or copied files get the same id.

    Hashes the size plus 1 MiB from the start, middle and end, so it costs three reads even for
    multi-GB files. Two different videos would need identical size and identical sampled bytes
    to collide.
    """
    size = location(path).stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    with open_input(path, block_size=_SAMPLE_BYTES) as f:
        for offset in sorted({0, max(0, size // 2 - _SAMPLE_BYTES // 2), max(0, size - _SAMPLE_BYTES)}):
            f.seek(offset)
            digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()


def path_id(path: str) -> str:
    """Id for a row about a file that could not be read (so its content has no fingerprint)."""
    return "path-" + hashlib.blake2b(absolute(path).encode(), digest_size=8).hexdigest()


def failed_video(path: str, error: str, stage: str, video_id: str | None = None) -> VideoRecord:
    """The videos.parquet row of an input that failed before its facts were known (keyed by its path)."""
    return VideoRecord(video_id=video_id or path_id(path), source_path=absolute(path) if path else "",
                       status=Status.FAILED, error=error, error_stage=stage)  # fmt: skip


@dataclass
class VideoProbe:
    video_id: str
    source_path: str
    size_bytes: int
    container: str
    codec: str
    pix_fmt: str | None
    width: int  # displayed, after rotation
    height: int
    coded_width: int
    coded_height: int
    rotation: int  # degrees counter-clockwise, one of 0/90/180/270
    fps: float
    variable_fps: bool
    num_frames: int
    duration_s: float
    time_base: Fraction
    has_audio: bool
    pts: np.ndarray = field(repr=False)  # int64, sorted: PTS of frame i (presentation order)
    pts_reliable: bool = True  # False: timestamps were synthesised, the video can't be seeked into
    video_stream: int = 0  # index of the stream the frames come from (see manifests.frames.pick_video_stream)

    def frame_seconds(self, frame: int) -> float:
        """Time of `frame` (or of the end of the stream for frame == num_frames), from PTS."""
        if frame >= self.num_frames:
            return self.duration_s
        return float((int(self.pts[frame]) - int(self.pts[0])) * self.time_base)

    @property
    def time_base_text(self) -> str:
        """The time base as manifests store it ("1/24000")."""
        return f"{self.time_base.numerator}/{self.time_base.denominator}"

    def shot_row(self, start: int, end: int, index: int, clip_index: int, detector: str,
                 reason: str | None = None) -> ShotRecord:  # fmt: skip
        """The shots.parquet row of frames [start, end) of this video: the one builder of a shot row
        (the job's reconcile stage and the importer). A `reason` flags it filtered."""
        start_s, end_s = self.frame_seconds(start), self.frame_seconds(end)
        end_pts = int(self.pts[end]) if end < self.num_frames else self.end_pts()
        return ShotRecord(
            video_id=self.video_id, shot_id=shot_id(self.video_id, start), shot_index=index,
            source_path=self.source_path, start_frame=start, end_frame=end, num_frames=end - start,
            start_s=start_s, end_s=end_s, duration_s=end_s - start_s,
            start_pts=int(self.pts[start]) if self.pts_reliable else None,
            end_pts=end_pts if self.pts_reliable else None, time_base=self.time_base_text, fps=self.fps,
            width=self.width, height=self.height, rotation=self.rotation, clip_index=clip_index,
            detector=detector, status=Status.FILTERED if reason else Status.OK, filter_reason=reason,
        )  # fmt: skip

    def end_pts(self) -> int:
        """PTS just after the last frame."""
        return int(self.pts[0]) + round(self.duration_s / self.time_base)

    def video_record(self, status: Status, **outcome) -> VideoRecord:
        """The videos.parquet row of this video: its facts, and `outcome` (num_clips, num_shots,
        processing_s, error, error_stage): the one builder of a probed video's row."""
        return VideoRecord(
            video_id=self.video_id, source_path=self.source_path, status=status, size_bytes=self.size_bytes,
            container=self.container, codec=self.codec, pix_fmt=self.pix_fmt, width=self.width, height=self.height,
            coded_width=self.coded_width, coded_height=self.coded_height, rotation=self.rotation, fps=self.fps,
            variable_fps=self.variable_fps, num_frames=self.num_frames, duration_s=self.duration_s,
            time_base=self.time_base_text, has_audio=self.has_audio, video_stream=self.video_stream, **outcome,
        )  # fmt: skip


def _is_variable(deltas: np.ndarray, time_base: Fraction) -> bool:
    if deltas.size < 2:
        return False
    median = float(np.median(deltas))
    # Millisecond time bases (MKV, WebM) round 29.97 fps to 33/34 ms steps: that is not VFR.
    tolerance = max(2.0, 0.02 * median, 0.0015 / float(time_base))
    return bool(np.abs(deltas - median).max() > tolerance)


def _file_size(path: str) -> int:
    """The size of a file that exists, is a file and is not empty; else ProbeError saying which."""
    where = location(path)
    try:
        found, regular = where.exists(), where.is_file()
    except OSError as err:  # a store that refuses (no such bucket, no permission)
        raise ProbeError(f"{path}: cannot be read ({err})") from err
    if not found:
        raise ProbeError(f"{path}: file not found (moved, deleted, or a typo in the path)")
    if not regular:
        raise ProbeError(f"{path}: not a regular file")
    size = where.stat().st_size
    if size == 0:
        raise ProbeError(f"{path}: file is empty (0 bytes)")
    return size


def _first_frame(path: str) -> av.VideoFrame:
    """The first decodable frame (its rotation is the video's); ProbeError when there is none."""
    with open_video(path, threads=1) as (container, stream):
        try:
            first = next(iter(container.decode(stream)), None)
        except av.error.FFmpegError as err:
            raise ProbeError(
                f"{path}: cannot decode the first frame ({err}); the file is corrupt or truncated"
            ) from err
        if first is None:
            raise ProbeError(f"{path}: the video stream has zero decodable frames (empty, corrupt or truncated)")
        return first


def probe(path: str, video_id: str | None = None) -> VideoProbe:
    """Read every packet header of the first video stream (no decoding except one frame).

    Raises ProbeError for a missing file, a file that is not a video, a video without frames or
    one whose first frame cannot be decoded.
    """
    size = _file_size(path)
    video_id = video_id or fingerprint(path)
    try:
        first = _first_frame(path)
        rotation = int(round((first.rotation or 0) / 90.0)) * 90 % 360
        with open_video(path, threads=1) as (container, stream):
            ctx = stream.codec_context
            time_base = stream.time_base or Fraction(1, 90000)
            timestamps, durations = [], []
            missing_pts = 0
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:
                    missing_pts += 1
                    continue
                timestamps.append(ts)
                durations.append(packet.duration or 0)
            num_packets = len(timestamps) + missing_pts
            if num_packets == 0:
                raise ProbeError(f"{path}: the video stream has zero frames")
            if num_packets == 1:
                raise ProbeError(f"{path}: a single {ctx.name} frame: a still image, not a video")
            avg_rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            if missing_pts or len(set(timestamps)) != len(timestamps):
                # No usable timestamps (raw elementary streams, some AVI): index frames in decode
                # order at the nominal rate; such a video is processed as one clip, never seeked.
                fps = float(avg_rate) if avg_rate else 25.0
                time_base = Fraction(1, 1000)
                pts = np.round(np.arange(num_packets) * 1000.0 / fps).astype(np.int64)
                reliable = False
                deltas = np.diff(pts)
                last = int(deltas[-1]) if deltas.size else round(1000 / fps)
            else:
                order = np.argsort(np.asarray(timestamps, dtype=np.int64), kind="stable")
                pts = np.asarray(timestamps, dtype=np.int64)[order]
                deltas = np.diff(pts)
                reliable = True
                last_duration = int(np.asarray(durations)[order][-1])
                last = last_duration or (
                    int(np.median(deltas)) if deltas.size else round(1 / (float(avg_rate or 25) * time_base))
                )
            span = int(pts[-1] - pts[0]) + last
            duration_s = float(span * time_base)
            fps = len(pts) / duration_s if duration_s > 0 else float(avg_rate or 0)
            coded_w, coded_h = ctx.width or first.width, ctx.height or first.height
            width, height = (coded_h, coded_w) if rotation in (90, 270) else (coded_w, coded_h)
            return VideoProbe(
                video_id=video_id,
                source_path=absolute(path),
                size_bytes=size,
                container=container.format.name,
                codec=ctx.name,
                pix_fmt=ctx.pix_fmt,
                width=width,
                height=height,
                coded_width=coded_w,
                coded_height=coded_h,
                rotation=rotation,
                fps=fps,
                variable_fps=reliable and _is_variable(deltas, time_base),
                num_frames=len(pts),
                duration_s=duration_s,
                time_base=time_base,
                has_audio=bool(container.streams.audio),
                pts=pts,
                pts_reliable=reliable,
                video_stream=stream.index,
            )
    except VideoReadError as err:
        raise ProbeError(str(err)) from err
    except av.error.FFmpegError as err:
        raise ProbeError(f"{path}: unreadable video ({err})") from err
