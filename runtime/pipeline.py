"""One frame through the pipeline (detect/track -> prepare -> batched SR -> compose -> record), and the
loop that runs a source into a sink.

`Enhancer` holds what must persist between frames (the tracker, the crop store); everything it computes
per frame is returned, not stored.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .backends import Backend
from .backends.base import infer_batched
from .compose import VIEWS, EnhancedFace, draw_fps, gallery, overlay, side_by_side
from .constants import MAX_FACES, MIN_FACE_PX
from .detect import FaceDetector, box_size
from .errors import RuntimeToolkitError, SourceError
from .faces import face_jobs, from_model_output, resize_crop, select_faces, to_model_input
from .frames import to_bgr
from .records import BestCropStore, EventLog
from .sinks import Sink
from .sources import ReadStatus, Source
from .timing import FpsMeter, StageTimer
from .track import IoUTracker, Track

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnhanceConfig:
    view: str = "overlay"
    detect_every: int = 1
    max_faces: int = MAX_FACES
    min_face: float = MIN_FACE_PX
    upscale: float = 1.0
    show_fps: bool = True


@dataclass
class FrameResult:
    index: int
    view: np.ndarray
    tracks: list[Track]
    faces: list[EnhancedFace]
    skipped_tiny: int
    over_limit: int


@dataclass
class RunStats:
    frames_read: int = 0
    frames: int = 0
    faces: int = 0
    skipped_tiny: int = 0
    over_limit: int = 0
    bad_frames: int = 0
    read_errors: int = 0
    timeouts: int = 0
    track_ids: set = field(default_factory=set)


def run_batched(backend: Backend, batch: np.ndarray) -> np.ndarray:
    """Run an [N, ...] batch in chunks of at most `backend.max_batch`; returns the image output."""
    return infer_batched(backend, batch)[backend.artifact.image_output.name]


class Enhancer:
    """Processes frames one at a time. Detection runs on frames 0, N, 2N, ... (N = detect_every)."""

    def __init__(self, backend: Backend, detector: FaceDetector, config: EnhanceConfig = EnhanceConfig(),
                 crops: BestCropStore | None = None, events: EventLog | None = None, timer: StageTimer | None = None):
        if config.view not in VIEWS:
            raise RuntimeToolkitError(f"view {config.view!r} received; expected one of {', '.join(VIEWS)}.")
        self.backend = backend
        self.detector = detector
        self.config = config
        self.crops = crops
        self.events = events
        self.timer = timer or StageTimer()
        self.tracker = IoUTracker()
        self.input_hw = backend.artifact.input_hw
        self.output_hw = backend.artifact.output_hw

    def process(self, frame: np.ndarray, index: int, fps: float | None = None) -> FrameResult:
        """One frame (grey, BGR or BGRA, any size) -> its view and what was found."""
        frame = to_bgr(frame)
        with self.timer.stage("detect"):
            tracks = self._tracks(frame, index)
        selected, tiny, over = select_faces(tracks, self.config.min_face, self.config.max_faces)
        with self.timer.stage("prepare"):
            jobs = face_jobs(frame, selected)
            small = [resize_crop(job.crop, self.input_hw) for job in jobs]
        with self.timer.stage("sr"):
            sr = from_model_output(run_batched(self.backend, to_model_input(small))) if jobs else []
        faces = [EnhancedFace(j.track_id, j.box, j.square, lr, out) for j, lr, out in zip(jobs, small, sr)]
        with self.timer.stage("compose"):
            view = self._render(frame, faces, fps)
        with self.timer.stage("encode"):
            self._record(index, jobs, faces)
        return FrameResult(index, view, tracks, faces, tiny, over)

    def _tracks(self, frame: np.ndarray, index: int) -> list[Track]:
        if index % self.config.detect_every == 0:
            return self.tracker.update(self.detector.detect(frame), index)
        return self.tracker.tracks_at(index)

    def _render(self, frame: np.ndarray, faces: list[EnhancedFace], fps: float | None) -> np.ndarray:
        if self.config.view == "overlay":
            view = overlay(frame, faces, self.config.upscale)
        elif self.config.view == "gallery":
            view = gallery(frame, faces)
        else:
            view = side_by_side(faces, self.config.max_faces, self.output_hw[0])
        return draw_fps(view, fps, f"{len(faces)} faces") if self.config.show_fps else view

    def _record(self, index: int, jobs, faces: list[EnhancedFace]) -> None:
        for job, face in zip(jobs, faces):
            crop_path = None
            if self.crops is not None:
                self.crops.offer(face.track_id, face.sr, box_size(face.box), job.crop)
                crop_path = self.crops.saved(face.track_id)
            if self.events is not None:
                self.events.write({"frame": index, "track": face.track_id,
                                   "box": [round(v, 1) for v in face.box],
                                   "crop": str(crop_path) if crop_path else None})


def run_stream(source: Source, sink: Sink, enhancer: Enhancer, max_frames: int | None = None,
               read_timeout: float = 1.0) -> RunStats:
    """Read, process and write until the source ends, `max_frames` frames are done, or the sink asks to stop.

    A frame that cannot be processed (odd dtype or shape) is logged and skipped; a live source that times
    out is simply asked again (it reconnects on its own). Backend and sink errors stop the run. Stage times
    are per written frame (time spent waiting for a frame counts towards its decode).
    """
    stats, fps_meter = RunStats(), FpsMeter()
    try:
        while max_frames is None or stats.frames < max_frames:
            if not _step(source, sink, enhancer, stats, fps_meter, read_timeout):
                break
    except KeyboardInterrupt:
        log.info("interrupted after %d frames", stats.frames)
    return stats


def _step(source: Source, sink: Sink, enhancer: Enhancer, stats: RunStats, fps_meter: FpsMeter,
          read_timeout: float) -> bool:
    """Read, process and write one frame; False when the run should end."""
    timer = enhancer.timer
    with timer.stage("decode"):
        status, frame = source.read(read_timeout)
    if status is ReadStatus.EOS:
        return False
    if status is not ReadStatus.OK:
        stats.timeouts += status is ReadStatus.TIMEOUT
        stats.read_errors += status is ReadStatus.ERROR
        return True
    stats.frames_read += 1
    try:
        result = enhancer.process(frame, stats.frames_read - 1, fps_meter.fps)
    except SourceError as err:
        log.warning("frame skipped: %s", err)
        stats.bad_frames += 1
        return True
    with timer.stage("encode"):
        sink.write(result.view)
    timer.frame_done()
    _count(stats, result)
    fps_meter.tick()
    if sink.wants_stop:
        log.info("stopped from the window")
        return False
    return True


def _count(stats: RunStats, result: FrameResult) -> None:
    stats.frames += 1
    stats.faces += len(result.faces)
    stats.skipped_tiny += result.skipped_tiny
    stats.over_limit += result.over_limit
    stats.track_ids.update(face.track_id for face in result.faces)


def summarize(stats: RunStats, timer: StageTimer, wall_s: float, extra: dict | None = None) -> dict:
    """The JSON summary printed (and optionally written) at the end of a run."""
    return {
        **(extra or {}),
        "frames": stats.frames,
        "faces": stats.faces,
        "tracks": len(stats.track_ids),
        "skipped_tiny_faces": stats.skipped_tiny,
        "over_max_faces": stats.over_limit,
        "bad_frames": stats.bad_frames,
        "read_errors": stats.read_errors,
        "read_timeouts": stats.timeouts,
        "wall_s": round(wall_s, 3),
        "fps": round(stats.frames / wall_s, 3) if wall_s > 0 else None,
        "stages_ms": timer.summary(),
    }
