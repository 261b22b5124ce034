"""Stages that kill their own worker process on one chosen item: what an OOM kill or a segfault in a
decoder or model looks like to the job. Importable by Ray workers (tests/ is a package path)."""

from __future__ import annotations

import os

from curation.annotate import MediaStage
from curation.detect import DetectStage
from curation.embed import EmbedStage
from curation.probe import ProbeStage
from curation.text import TextStage

TRIGGER = "crash"  # in a file name: the item that takes its worker down


def _die() -> None:
    os._exit(1)  # no exception, no cleanup: the process is simply gone


class CrashingProbe(ProbeStage):
    def process(self, path):
        if TRIGGER in os.path.basename(path):
            _die()
        return super().process(path)


class CrashingDetect(DetectStage):
    def process(self, item):
        if TRIGGER in os.path.basename(item.path) and item.window.clip_index == 1:
            _die()
        return super().process(item)


class CrashingEmbed(EmbedStage):
    def process(self, item):
        if any(TRIGGER in os.path.basename(s["source_path"]) for s in item.shots):
            _die()
        return super().process(item)


class CrashingMedia(MediaStage):
    def process(self, shots):
        if any(TRIGGER in os.path.basename(s["source_path"]) for s in shots):
            _die()
        return super().process(shots)


class CrashingText(TextStage):
    def process(self, item):
        if TRIGGER in os.path.basename(item.source_path):
            _die()
        return super().process(item)


class SlowDetect(DetectStage):
    """Detection that takes a few seconds per clip, so a node can be removed while it holds clips."""

    def process(self, item):
        import time

        time.sleep(3.0)
        return super().process(item)
