"""The Python API: `FaceSR`, in the manner of Ultralytics' `model(frame)` / `model.predict(stream=True)`.

    from runtime import FaceSR
    sr = FaceSR("artifacts/pfsr_fp16.json", detector="../shared/models/face_detection_yunet_2023mar.onnx")
    for result in sr.stream("../shared/data/scenes/street-video-1080p.mp4", max_frames=10):
        for face in result.faces:
            print(face.track_id, face.box, face.crop.shape, None if face.sr is None else face.sr.shape)
    result = sr(frame)  # one BGR frame: its faces enhanced, no frame index or tracking needed

Backend and detector are chosen as the CLI chooses them. Each `stream()` has its own tracker (a face is
confirmed over a few detections before it is enhanced, as in `python -m runtime.enhance`); a call on one frame
treats it as a photo (every face at once). Results are `runtime.pipeline.FrameResult`: `.frame` (the input),
`.view` (the composed picture), `.faces` (`EnhancedFace`: `.box`, `.crop` (recorded), `.sr` (enhanced or None),
`.track_id`, `.route`, `.landmarks_in_frame()`).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace

import numpy as np

from .assets import detector_model_path
from .backends import create_backend, load_models
from .constants import DETECT_MAX_SIDE, MAX_FACES, TRACK_CONFIRM_HITS, TRACK_CONFIRM_SCORE
from .detect import FaceDetector
from .pipeline import EnhanceConfig, Enhancer, FrameResult
from .routing import default_min_face
from .outputs import NullSink, WindowSink
from .run import Lane, frames_inline
from .sources import open_source

__all__ = ["FaceSR"]


class FaceSR:
    """Face super-resolution on frames, videos, cameras and streams.

    Args:
        model: an artifact (manifest .json, .onnx, .engine or triton://HOST:PORT/NAME), or several of
            different input sizes (each face goes to the one that fits, as with repeated --model).
        backend: auto (TensorRT for engines where installed, else ONNX Runtime), onnxruntime, tensorrt, torch,
            triton.
        detector: the YuNet ONNX file (default: the per-user cache of `python -m runtime.assets fetch`).
        view, upscale, enhance_all, max_faces, min_face, detect_every, draw_landmarks, self_ensemble,
            fuse_frames: as the CLI's options (fusion applies to `stream()`, not to single-frame calls).
        camera_grade: also load the camera-grade twins the models' manifests name, and pick per face (the
            CLI's --no-camera-grade is False).
        fused_grade: with fuse_frames > 1, also load the fused-grade twins, for the faces fused with earlier
            frames (the CLI's --no-fused-grade is False).
    """

    def __init__(self, model: str | list[str], *, backend: str = "auto", detector: str | None = None,
                 view: str = "overlay", upscale: float = 1.0, enhance_all: bool = False, max_faces: int = MAX_FACES,
                 min_face: float | None = None, detect_every: int = 1, draw_landmarks: bool = False,
                 self_ensemble: bool = False, fuse_frames: int = 1, camera_grade: bool = True,
                 fused_grade: bool = True):
        artifacts = load_models([model] if isinstance(model, str) else list(model), camera_grade,
                                fused_grade and fuse_frames > 1)
        self.min_face = min_face or default_min_face(artifacts)
        self.detector = FaceDetector(detector_model_path(detector), max_side=DETECT_MAX_SIDE,
                                     min_face_px=self.min_face, min_face_asked=min_face is not None)
        self._resources = ExitStack()
        try:  # a backend that fails to open closes the ones opened before it
            self.backends = [self._resources.enter_context(create_backend(backend, a, self_ensemble=self_ensemble))
                             for a in artifacts]
            self.config = EnhanceConfig(view=view, detect_every=detect_every, max_faces=max_faces,
                                        min_face=self.min_face, upscale=upscale, enhance_all=enhance_all,
                                        draw_landmarks=draw_landmarks, fuse_frames=fuse_frames)
            self._photos = self._enhancer(photos=True)
        except BaseException:
            self._resources.close()
            raise
        self._calls = 0

    def _enhancer(self, photos: bool) -> Enhancer:
        """Photos: every frame on its own, faces confirmed at once; videos: tracks confirmed over detections."""
        config = replace(self.config, confirm_hits=1 if photos else TRACK_CONFIRM_HITS,
                         confirm_score=0.0 if photos else TRACK_CONFIRM_SCORE, independent_frames=photos)
        return Enhancer(self.backends, self.detector, config)

    def __call__(self, frame: np.ndarray) -> FrameResult:
        """One BGR (or grey/BGRA) frame -> its result; faces enhanced at once, nothing carried to the next call."""
        result = self._photos.process(frame, self._calls)
        self._calls += 1
        return result

    def stream(self, source, show: bool = False, max_frames: int | None = None) -> Iterator[FrameResult]:
        """Results of a camera, stream, video, image or folder, frame by frame (a generator). `source` is what
        --source takes (0, /dev/video0, rtsp://..., a file or folder). `show` opens a window (q/Esc stops)."""
        with open_source(str(source)) as frames, (WindowSink() if show else NullSink()) as window:
            yield from frames_inline(Lane(frames, window, self._enhancer(photos=False)), max_frames)

    def close(self) -> None:
        """Release the backends (also on leaving a `with FaceSR(...) as sr:` block)."""
        self._resources.close()

    def __enter__(self) -> "FaceSR":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
