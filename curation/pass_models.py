"""A model over the frames the detection pass kept, for every shot before its video is committed
(burned-in text, aesthetics): the stage that feeds such a model, one kind for all of them.

The model is a `Remote` with actors (loaded once each) whose `process(ShotBatch)` returns each shot's
columns, `{(start, end): {column: value}}`, and whose `spec` says which frames it reads (kept in the
detection pass under the stage's name). The stage sits between detection and reconcile: a clip's
finished shots go to the model as soon as the clip is back, the shots across clip edges once all
the video's clips are, and the video moves on to be committed when every answer is back, its
columns in `task.signals`. A shot an earlier filter flags (`before`: too short, a transition, dark,
static) is not read. A model that fails on a video fails the video: a re-run redoes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from curation.config import CurationConfig
from curation.cuts import shots_from_cuts
from curation.driver import Driver
from curation.measures import Measure, merged
from curation.shot_filters import ShotEvidence, ShotFilter, evidence, filter_reason
from curation.shot_frames import frames_for_shot
from curation.stage import Failure, Remote, Resources, Stage
from curation.tasks import VideoTask


@dataclass(frozen=True)
class PassShot:
    start: int
    end: int
    crop: tuple[int, int, int, int]  # the active picture (x, y, w, h), upright source pixels
    frames: object = None  # ShotFrames from the detection pass, or None: read from the source
    row: object = None  # the shot's row (a ShotRecord), for reading its frames from the source


@dataclass(frozen=True)
class ShotBatch:
    video_id: str
    width: int  # the upright picture at source resolution
    height: int
    shots: list[PassShot] = field(default_factory=list)
    source_path: str = ""


def pass_resources() -> Resources:
    """A GPU per actor where the cluster has them; never a CPU slot (see curation.embed.embed_resources)."""
    import ray

    return Resources(cpus=0, gpus=1) if int(ray.cluster_resources().get("GPU", 0)) else Resources(cpus=0)


def pass_actors() -> int:
    """One actor per GPU; on CPU one (the model shares the cores with detection)."""
    import ray

    return max(1, int(ray.cluster_resources().get("GPU", 0)))


class PassModel(Stage):
    """Feeds one model (`remote`) the kept frames of each shot; see the module docstring."""

    def __init__(self, remote: Remote, config: CurationConfig, measures: list[Measure], before: list[ShotFilter],
                 actor_count: int | None = None):  # fmt: skip
        self.remote, self.config, self.measures, self.before = remote, config, list(measures), list(before)
        self.name, self.about = remote.name, getattr(remote, "about", "")
        self.actor_count = actor_count or pass_actors()
        self.videos: dict[str, _Video] = {}

    @property
    def module(self) -> str:
        return type(self.remote).__module__  # the model's own module (curation/text.py, ...)

    def partial(self, source: str, task: VideoTask, payload, driver: Driver) -> None:
        if source != "detect":
            return
        state = self.videos.setdefault(task.video_id, _Video())
        shots, judge = [], self._judge(task, [payload])
        for start, kept in sorted(payload.frames.shots.items()):
            frames = kept.pop(self.name, None)  # the driver keeps no frames it has sent
            end = payload.frames.ends[start]
            shot = judge(start, end)
            if frames is not None and self._wanted(shot):
                shots.append(PassShot(start, end, crop_of(shot), frames))
        self._send(task, shots, state, driver)

    def enter(self, task: VideoTask, driver: Driver) -> None:
        state = self.videos.setdefault(task.video_id, _Video())
        state.task = task
        results = [task.detected[i] for i in range(len(task.clips))]
        if any(r.error for r in results):  # reconcile records the failed clips
            self.videos.pop(task.video_id, None)
            return driver.forward(self, task)
        clips = [r.frames for r in results if r.frames]
        cuts, forced = [c for r in results for c in r.cuts], {c for r in results for c in r.forced}
        spans = shots_from_cuts(cuts, task.probe.num_frames, self.config.shots.detector.min_scene_frames, forced)
        todo, judge = [], self._judge(task, results)
        for start, end in spans:
            if (start, end) in state.sent:
                continue
            shot = judge(start, end)
            if not self._wanted(shot):
                continue
            frames = frames_for_shot(start, end, clips, self.name, self.remote.spec)
            row = None if frames is not None else task.probe.shot_row(start, end, 0, 0, "")
            todo.append(PassShot(start, end, crop_of(shot), frames, row))
        self._send(task, todo, state, driver)
        state.entered = True
        self._forward_when_done(task, state, driver)

    def _judge(self, task: VideoTask, results):
        """(start, end) -> the span's evidence from these clip results: their samples merged once
        for all the spans, not once per span (a long video has thousands of each)."""
        transitions = {t for r in results for t in r.transitions}
        samples = merged(results, [m.name for m in self.measures])
        return lambda start, end: evidence(task.probe, start, end, transitions, samples, self.measures)

    def _wanted(self, shot: ShotEvidence) -> bool:
        return filter_reason(shot, self.config, self.before) is None

    def _send(self, task: VideoTask, shots: list[PassShot], state: _Video, driver: Driver) -> None:
        if not shots:
            return
        state.sent |= {(s.start, s.end) for s in shots}
        state.pending += 1

        def done(result) -> None:
            state.pending -= 1
            if isinstance(result, Failure):
                state.failure = state.failure or result
            else:
                for span, columns in result.items():
                    state.found.setdefault(span, {}).update(columns)
            if state.task is not None:
                self._forward_when_done(state.task, state, driver)

        driver.work(self, ShotBatch(task.video_id, task.probe.width, task.probe.height, shots, task.path), done)

    def _forward_when_done(self, task: VideoTask, state: _Video, driver: Driver) -> None:
        if state.pending or not state.entered or self.videos.get(task.video_id) is not state:
            return
        del self.videos[task.video_id]
        if state.failure is not None:
            return driver.fail(self, task, Failure(self.name, f"{task.probe.source_path}: {state.failure.error}"))
        for span, columns in state.found.items():
            task.signals.setdefault(span, {}).update(columns)
        driver.forward(self, task)

    def dropped(self, task: VideoTask, driver: Driver) -> None:
        self.videos.pop(task.video_id, None)


@dataclass
class _Video:
    sent: set = field(default_factory=set)  # (start, end) of the shots sent to the model
    found: dict = field(default_factory=dict)  # (start, end) -> the model's columns
    pending: int = 0
    entered: bool = False  # all the video's clips are back and its remaining shots sent
    task: VideoTask | None = None
    failure: Failure | None = None


def crop_of(shot: ShotEvidence) -> tuple[int, int, int, int]:
    """The shot's active picture (x, y, w, h), the whole frame where the bars measure did not run."""
    v = shot.values
    if v.get("crop_w") is None:
        return 0, 0, shot.width, shot.height
    return int(v["crop_x"]), int(v["crop_y"]), int(v["crop_w"]), int(v["crop_h"])


def shot_images(stage, shot: PassShot):
    """The shot's frames for `stage.spec`: those the detection pass kept, or read from the source."""
    if shot.frames is not None:
        return shot.frames.images
    from manifests.frames import read_shot_frames

    offsets = [f - shot.start for f in stage.spec.pass_frames(shot.start, shot.end)]
    return read_shot_frames(shot.row, indices=offsets, max_side=stage.spec.read_size())
