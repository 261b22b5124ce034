"""The probe stage: content fingerprint, stream facts and the PTS of every frame, one Ray task per video.

A video already in the manifests (under any name: the fingerprint is of its content) is not
probed again. Reading the facts themselves is `manifests.probe`, shared with the bottom floor.
"""

from __future__ import annotations

from dataclasses import dataclass

from curation.stage import Resources, Stage
from manifests.probe import ProbeError, VideoProbe, fingerprint, probe
from manifests.store import location


@dataclass
class Skipped:
    path: str
    video_id: str


class ProbeStage(Stage):
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
