"""One frame through the pipeline: detect/track -> prepare -> batched SR -> compose -> record. The loop that
runs sources into outputs is `runtime.run`.

`Enhancer` holds what must persist between frames (the tracker, the crop store); everything it computes
per frame is returned, not stored.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

import numpy as np

from .backends import Backend
from .backends.base import infer_batched
from .compose import (VIEWS, EnhancedFace, comparison, draw_fps, gallery, gallery_layout, mark_landmarks, overlay,
                      side_by_side)
from .constants import FRAMING_GRID, MAX_FACES, MIN_FACE_PX, TRACK_CONFIRM_SCORE
from .detect import FaceDetector, box_size
from .errors import RuntimeToolkitError
from .faces import (FaceJob, covering_job, crop_square, face_jobs, from_model_output, model_crop, native_region,
                    select_faces, square_from_region, to_model_input)
from .frames import to_bgr
from .fusion import TemporalFusion
from .records import BestCropStore, EventLog
from .recording import RecordingGate
from .routing import FORCED, NON_FINITE, Route, Twins, model_fit
from .steady import SteadyFaces
from .tiles import enhance_regions
from .timing import StageTimer
from .tone import keep_recorded_tones
from .track import IoUTracker, Track

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnhanceConfig:
    """`enhance_all`: send every face to its best-fitting model, even where routing would keep the source
    pixels (a face shown no larger than recorded, or above the model's crossover size)."""

    view: str = "overlay"
    detect_every: int = 1
    max_faces: int = MAX_FACES
    min_face: float = MIN_FACE_PX
    upscale: float = 1.0
    show_fps: bool = True
    enhance_all: bool = False
    confirm_hits: int = 1  # detections before a track counts as a face (videos: TRACK_CONFIRM_HITS)
    confirm_score: float = 0.0  # ... with at least this mean detector score (videos: TRACK_CONFIRM_SCORE)
    independent_frames: bool = False  # stills (an image folder): no track carries over to the next frame
    still_confirm_score: float = TRACK_CONFIRM_SCORE  # stills: mean of first and second-look score (0: off)
    draw_landmarks: bool = False  # dots on enhanced faces (models exported --with-landmarks)
    fuse_frames: int = 0  # > 1: SR reads each face fused with its earlier frames (runtime.fusion); videos only


@dataclass
class FrameResult:
    index: int
    view: np.ndarray
    tracks: list[Track]
    faces: list[EnhancedFace]
    skipped_tiny: int
    over_limit: int
    frame: np.ndarray | None = None  # the frame as processed (BGR)
    captured_at: float | None = None  # time.perf_counter() when the frame came out of the source


@dataclass
class PreparedFrame:
    """A frame after detection, tracking and face preparation, before SR."""

    frame: np.ndarray
    index: int
    tracks: list[Track]
    jobs: list[FaceJob]
    routes: list[Route]
    skipped_tiny: int
    over_limit: int
    captured_at: float | None = None
    fused: np.ndarray | None = None  # the frame with its faces fused over time (--fuse-frames), for SR only
    still: list[bool] = field(default_factory=list)  # per job: fusion found the face still (TemporalFusion.still)

    @property
    def sr_source(self) -> np.ndarray:
        """The pixels SR cuts faces from."""
        return self.frame if self.fused is None else self.fused


LANDMARK_OUTPUT = "landmarks"  # the extra output of a model exported with --with-landmarks


def recording_gate(artifact) -> RecordingGate | None:
    """The camera-grade gate an artifact's manifest carries (checked when the manifest was read), or None."""
    gate = getattr(artifact.manifest, "recording_gate", None)
    return None if gate is None else RecordingGate.from_dict(gate)


def reads_fused(artifact) -> bool:
    """Was the artifact's model trained on faces fused over a burst (a fused-grade twin)?"""
    return getattr(artifact.manifest, "fused_input", None) is not None


def run_batched(backend: Backend, batch: np.ndarray) -> np.ndarray:
    """Run an [N, ...] batch in chunks of at most `backend.max_batch`; returns the image output."""
    return infer_batched(backend, batch)[backend.artifact.image_output.name]


def has_landmarks(backend: Backend) -> bool:
    return any(spec.name == LANDMARK_OUTPUT for spec in backend.artifact.outputs)


class Enhancer:
    """Processes frames one at a time. Detection runs on frames 0, N, 2N, ... (N = detect_every).

    `backends` is one backend or a list of them (models of different input sizes, e.g. a x8 16 -> 128 and a
    x4 32 -> 128 model): each face goes to the model that fits its native size (see `runtime.routing`), and
    faces are batched per model.
    """

    def __init__(self, backends: Backend | list[Backend], detector: FaceDetector,
                 config: EnhanceConfig = EnhanceConfig(), crops: BestCropStore | None = None,
                 events: EventLog | None = None, timer: StageTimer | None = None):
        if config.view not in VIEWS:
            raise RuntimeToolkitError(f"view {config.view!r} received; expected one of {', '.join(VIEWS)}.")
        self.backends = list(backends) if isinstance(backends, (list, tuple)) else [backends]
        self.detector = detector
        self.config = config
        self.crops = crops
        self.events = events
        self.timer = timer or StageTimer()
        self.tracker = IoUTracker(confirm_hits=config.confirm_hits, confirm_score=config.confirm_score)
        self.fits = [model_fit(b.artifact) for b in self.backends]
        self.twins = Twins.pair(self.fits, [recording_gate(b.artifact) for b in self.backends],
                                [reads_fused(b.artifact) for b in self.backends])
        fusing = config.fuse_frames > 1 and not config.independent_frames
        self.fusion = TemporalFusion(config.fuse_frames) if fusing else None
        self.steady = SteadyFaces() if fusing else None
        self.output_hw = max(b.artifact.output_hw for b in self.backends)

    def reset_tracks(self) -> None:
        """Forget every track (a new clip or an unrelated photo); ids keep counting up."""
        self.tracker = IoUTracker(confirm_hits=self.config.confirm_hits, confirm_score=self.config.confirm_score,
                                  next_id=self.tracker.next_id)
        if self.fusion is not None:
            self.fusion.reset()
            self.steady.reset()

    def next_view(self) -> None:
        """Cycle overlay -> gallery -> side-by-side (the window's v key)."""
        following = VIEWS[(VIEWS.index(self.config.view) + 1) % len(VIEWS)]
        self.config = replace(self.config, view=following)
        log.info("view: %s", following)

    @property
    def backend(self) -> Backend:
        return self.backends[0]

    def process(self, frame: np.ndarray, index: int, fps: float | None = None) -> FrameResult:
        """One frame (grey, BGR or BGRA, any size) -> its view and what was found."""
        prepared = self.prepare(frame, index)
        return self.finish(prepared, self.enhance(prepared), fps)

    # The three parts of `process`, which `runtime.run`'s threaded schedule runs on separate threads (each part
    # keeps the state it owns: the tracker and the fusion's earlier frames in `prepare`, the crop store and events
    # in `finish`).
    def prepare(self, frame: np.ndarray, index: int, timer: StageTimer | None = None) -> PreparedFrame:
        """Detect/track, choose the faces, cut them out and route them."""
        timer = timer or self.timer
        captured_at = time.perf_counter()
        frame = to_bgr(frame)
        with timer.stage("detect"):
            tracks = self._tracks(frame, index)
        selected, tiny, over = select_faces(tracks, self.config.min_face, self.config.max_faces)
        with timer.stage("prepare"):
            grid = self._framing_grid()
            jobs = face_jobs(frame, selected, grid)
            routes = [self.twins.route(job.square.side, self._display_px(frame, job, len(jobs)), self.fits,
                                       self.config.enhance_all) for job in jobs]
            jobs = [covering_job(frame, job, grid) if self._tiled(decision) else job
                    for job, decision in zip(jobs, routes)]
            fused, fused_with = None, [0] * len(jobs)
            if self.fusion is not None:
                enhanced = [i for i, d in enumerate(routes) if d.model is not None]
                fused = self.fusion.fuse(frame, [jobs[i] for i in enhanced])
                for i, count in zip(enhanced, self.fusion.fused_with):
                    fused_with[i] = count
            if self.twins:  # the gate reads the recording (a twin has the same fit: same framing, fusion)
                routes = [self.twins.choose(d, job.crop, n) if d.model is not None else d
                          for job, d, n in zip(jobs, routes, fused_with)]
        still = [self.fusion.still(n) for n in fused_with] if self.fusion is not None else []
        return PreparedFrame(frame, index, tracks, jobs, routes, tiny, over, captured_at, fused, still)

    def enhance(self, prepared: PreparedFrame, timer: StageTimer | None = None) -> list[EnhancedFace]:
        """The routed faces through their models (one batch per model)."""
        with (timer or self.timer).stage("sr"):
            return enhance_frames(self.backends, [prepared])[0]

    def finish(self, prepared: PreparedFrame, faces: list[EnhancedFace], fps: float | None = None,
               timer: StageTimer | None = None) -> FrameResult:
        """Compose the view and record crops and events."""
        timer = timer or self.timer
        with timer.stage("compose"):
            if self.steady is not None:  # only faces fusion found still: a walking face blurs when blended
                faces = self.steady.apply(faces, prepared.still)
            view = self._render(prepared.frame, faces, fps)
        with timer.stage("encode"):
            self._record(prepared.index, faces)
        return FrameResult(prepared.index, view, prepared.tracks, faces, prepared.skipped_tiny, prepared.over_limit,
                           prepared.frame, prepared.captured_at)

    def _tiled(self, decision: Route) -> bool:
        """Is the face routed to a model that runs tile by tile (framed by `faces.cover_square`)?"""
        return decision.model is not None and runs_tiled(self.backends[decision.model], decision)

    def _framing_grid(self) -> float:
        """Faces are framed on the display's pixel grid in the overlay (so they paste back onto whole
        pixels), and to FRAMING_GRID of a pixel in the other views."""
        if self.config.view == "overlay":
            return max(1.0, self.config.upscale)
        return FRAMING_GRID

    def _display_px(self, frame: np.ndarray, job: FaceJob, face_count: int) -> float:
        """How large the face is shown in the chosen view."""
        if self.config.view == "overlay":
            return job.square.side * self.config.upscale
        if self.config.view == "gallery":
            return gallery_layout(frame.shape[1], frame.shape[0], face_count).thumb
        return self.output_hw[0]

    def _tracks(self, frame: np.ndarray, index: int) -> list[Track]:
        if self.config.independent_frames:  # unrelated photos: a new tracker, detection on every one
            self.reset_tracks()
            return self.tracker.update(self._confirmed_in_still(frame), index)
        if index % self.config.detect_every == 0:
            return self.tracker.update(self.detector.detect(frame), index)
        return self.tracker.tracks_at(index)

    def _confirmed_in_still(self, frame: np.ndarray) -> list:
        """A photo's detections that are faces: the mean of the detector's score and its second look's
        reaches the still threshold (constants.STILL_SECOND_LOOK_FACE_PX: no second frame to confirm with)."""
        threshold = self.config.still_confirm_score
        return [d for d in self.detector.detect(frame)
                if threshold <= 0 or (d.score + self.detector.second_look_score(frame, d)) / 2 >= threshold]

    def _render(self, frame: np.ndarray, faces: list[EnhancedFace], fps: float | None) -> np.ndarray:
        if self.config.draw_landmarks:
            faces = [mark_landmarks(face) for face in faces]
        if self.config.view == "overlay":
            view = overlay(frame, faces, self.config.upscale)
        elif self.config.view == "gallery":
            view = gallery(frame, faces)
        else:
            view = side_by_side(faces, self.config.max_faces, self.output_hw[0])
        enhanced = sum(face.sr is not None for face in faces)
        return draw_fps(view, fps, f"{enhanced}/{len(faces)} faces enhanced") if self.config.show_fps else view

    def _record(self, index: int, faces: list[EnhancedFace]) -> None:
        for face in faces:
            crop_path = None
            if self.crops is not None:
                self.crops.offer(face.track_id, comparison(face, self.output_hw[0]), box_size(face.box),
                                 face.native)
                crop_path = self.crops.saved(face.track_id)
            if self.events is not None:
                self.events.write(self._event(index, face, crop_path))

    def _event(self, index: int, face: EnhancedFace, crop_path) -> dict:
        event = {"frame": index, "track": face.track_id, "box": [round(v, 1) for v in face.box],
                 "enhanced": face.sr is not None,
                 "model": None if face.model is None else self.backends[face.model].artifact.model_name,
                 "route": face.route, "crop": str(crop_path) if crop_path else None}
        points = face.landmarks_in_frame()
        if points is not None:
            event["landmarks"] = np.round(points, 1).tolist()  # [K, 2] (x, y) in frame pixels
        return event


def enhance_frames(backends: list[Backend], frames: list[PreparedFrame]) -> list[list[EnhancedFace]]:
    """The routed faces of one or more frames (several cameras) through their models, one batch per model
    for all of them; the other faces keep their source pixels. Returns each frame's faces, in order."""
    jobs = [(f, i) for f, frame in enumerate(frames) for i in range(len(frame.jobs))]
    results = {}
    for number, backend in enumerate(backends):
        tiled, members = [], []  # this model's faces, tile by tile / through its input
        for f, i in jobs:
            if frames[f].routes[i].model == number:
                (tiled if runs_tiled(backend, frames[f].routes[i]) else members).append((f, i))
        if tiled:
            results.update(zip(tiled, enhance_tiled(backend, [(frames[f].sr_source, frames[f].jobs[i])
                                                               for f, i in tiled])))
        if not members:
            continue
        small = [model_crop(frames[f].sr_source, _job_in(frames[f], i), backend.artifact.input_hw)
                 for f, i in members]
        outputs = infer_batched(backend, to_model_input(small))
        raw = outputs[backend.artifact.image_output.name]
        finite = np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
        images = [keep_recorded_tones(image, crop) if ok else None
                  for image, crop, ok in zip(from_model_output(raw), small, finite)]
        points = outputs.get(LANDMARK_OUTPUT, [None] * len(members))
        results.update({key: (lr, sr, p) for key, lr, sr, p in zip(members, small, images, points)})
    enhanced = []
    for f, frame in enumerate(frames):
        faces = []
        for i, (job, decision) in enumerate(zip(frame.jobs, frame.routes)):
            lr, sr, points = results.get((f, i), (None, None, None))
            broken = decision.model is not None and sr is None
            faces.append(EnhancedFace(job.track_id, job.box, job.square, lr, sr, native=job.crop,
                                      route=NON_FINITE if broken else decision.reason, model=decision.model,
                                      landmarks=points, kept="non_finite" if broken else decision.kind))
        enhanced.append(faces)
    return enhanced


def _job_in(frame: PreparedFrame, i: int) -> FaceJob:
    """Job i with its crop cut from the pixels SR reads (the fused frame, when there is one)."""
    job = frame.jobs[i]
    return job if frame.fused is None else replace(job, crop=crop_square(frame.fused, job.square))


def runs_tiled(backend: Backend, decision: Route) -> bool:
    """Tile by tile: a tiled model's faces, except those enhanced only because --enhance-all forced them
    (see `routing.route`), which go through its input like any model's."""
    return backend.artifact.tiling is not None and decision.reason != FORCED


def enhance_tiled(backend: Backend, faces: list[tuple[np.ndarray, FaceJob]]) -> list[tuple]:
    """(lr, sr, landmarks) per (frame, job) for a model that runs at the faces' recorded resolution
    (`runtime.tiles`): each face's native region is enhanced tile by tile, all tiles in one batch, and the
    face's square is cut back out at `scale` x its recorded size."""
    tiling = backend.artifact.tiling
    regions = [native_region(job.square, tiling.tile) for _, job in faces]
    crops = [crop_square(frame, region) for (frame, _), region in zip(faces, regions)]
    model_images = enhance_regions(lambda batch: run_batched(backend, batch), crops, tiling)
    images = [keep_recorded_tones(image, crop) if image is not None else None
              for image, crop in zip(model_images, crops)]
    return [(job.crop, square_from_region(image, region, job.square) if image is not None else None, None)
            for (_, job), region, image in zip(faces, regions, images)]
