"""The probe stage: content fingerprint, stream facts and the PTS of every frame, one Ray task per video.

A video already in the manifests (under any name: the fingerprint is of its content) is not
probed again. Reading the facts themselves is `manifests.probe`, shared with the bottom floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from curation.config import CurationConfig
from curation.stage import Failure, Remote, Resources, Stage
from curation.tasks import VideoTask
from manifests.probe import ProbeError, VideoProbe, fingerprint, probe
from manifests.schema import Status
from manifests.store import location

if TYPE_CHECKING:  # the driver's side only: a probe worker does not import the driver (pandas, the tables)
    from curation.driver import Driver


@dataclass
class Skipped:
    path: str
    video_id: str


class ProbeRemote(Remote):
    name = "probe"

    def __init__(self, done_ids: frozenset[str], cpus: float = 1.0):
        self.done_ids, self.resources = done_ids, Resources(cpus=cpus)

    def process(self, path: str) -> VideoProbe | Skipped:
        try:
            if not location(path).is_file():
                raise ProbeError(f"{path}: file not found; check the --input path")
            video_id = fingerprint(path)
        except OSError as err:
            raise ProbeError(
                f"{path}: cannot read file ({err.strerror or err}); check the path and permissions"
            ) from None
        if video_id in self.done_ids:
            return Skipped(path, video_id)
        try:
            return probe(path, video_id)
        except ProbeError:
            raise
        except Exception as err:  # an unexpected decoder or container bug: this video's row says so
            raise ProbeError(f"{path}: unexpected error while probing: {type(err).__name__}: {err}") from None


class Probe(Stage):
    """Probe each video once per content: an input done by an earlier run, or the same content as an
    earlier input of this run, ends here."""

    name = "probe"
    about = "content fingerprint, stream facts, PTS of every frame (Ray task per video)"

    def __init__(self, remote: ProbeRemote):
        self.remote = remote
        self.seen: set[str] = set()

    def enter(self, task: VideoTask, driver: Driver) -> None:
        def done(result) -> None:
            if isinstance(result, Failure):
                driver.fail(self, task, result)
            elif isinstance(result, Skipped) or result.video_id in self.seen:
                driver.skip(task, duplicate=not isinstance(result, Skipped))
            else:
                self.seen.add(result.video_id)
                task.probe = result
                driver.forward(self, task)

        driver.work(self, task.path, done)


def completed_video_ids(config: CurationConfig) -> frozenset[str]:
    """Videos a resumed run skips: those committed ok whose shot and clip parts are all still there
    (a deleted table or part makes its videos redo), and failed ones too with retry_failed off."""
    from manifests.io import read_table, table_video_ids  # the driver's side: probe workers never read tables

    videos = read_table(config.output, "videos", missing_ok=True, columns=["video_id", "status"])
    if config.retry_failed:
        videos = videos[videos["status"] == Status.OK]

    with_rows = {table: table_video_ids(config.output, table) for table in ("shots", "clips")}

    def intact(video_id: str, status: str) -> bool:  # an ok video has at least one shot and one clip
        return status != Status.OK or all(video_id in ids for ids in with_rows.values())

    return frozenset(v for v, status in zip(videos["video_id"], videos["status"]) if intact(v, status))
