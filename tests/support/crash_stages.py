"""Stages that kill their own worker process on one chosen item: what an OOM kill or a segfault in a
decoder or model looks like to the job. Importable by Ray workers (tests/ is a package path)."""

from __future__ import annotations

import os

from curation.annotate import MediaRemote
from curation.detect import DetectRemote
from curation.embed import EmbedRemote
from curation.probe import ProbeRemote
from curation.text import TextRemote

TRIGGER = "crash"  # in a file name: the item that takes its worker down


def _die() -> None:
    os._exit(1)  # no exception, no cleanup: the process is simply gone


class CrashingProbe(ProbeRemote):
    def process(self, path):
        if TRIGGER in os.path.basename(path):
            _die()
        return super().process(path)


class CrashingDetect(DetectRemote):
    def process(self, item):
        if TRIGGER in os.path.basename(item.path) and item.window.clip_index == 1:
            _die()
        return super().process(item)


class CrashingEmbed(EmbedRemote):
    def process(self, item):
        if any(TRIGGER in os.path.basename(s["source_path"]) for s in item.shots):
            _die()
        return super().process(item)


class CrashingMedia(MediaRemote):
    def process(self, shots):
        if any(TRIGGER in os.path.basename(s["source_path"]) for s in shots):
            _die()
        return super().process(shots)


class CrashingText(TextRemote):
    def process(self, item):
        if TRIGGER in os.path.basename(item.source_path):
            _die()
        return super().process(item)


class SlowDetect(DetectRemote):
    """Detection that takes a few seconds per clip, so a node can be removed while it holds clips."""

    def process(self, item):
        import time

        time.sleep(3.0)
        return super().process(item)
