"""A static camera's burst of one face, fused as the runtime fuses it (`--fuse-frames`): training input for
models that read fused faces.

A camera that keeps still films the same face in many frames. Each frame samples it at another sub-pixel
phase (the mount shakes by a fraction of a pixel) with its own sensor noise, and the codec's rate control moves
its quality a little; the optics and the codec stay the same. `record_burst` films an HR face that way: frame 0
is the face as framed (the current frame, whose HR is the target), the earlier frames are the HR moved by up to
`shake` recorded pixels per axis. `fuse_burst` then does what `runtime.fusion` does with a track's windows:
registers each earlier recording to the current one and averages them with the noise-aware weights. The window
is recorded with as much context again around the face (reflected), since the runtime registers a window twice
the face's side.
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from runtime.fusion import fuse_windows

from .degrade import LEVELS, DegradationParams, degrade_face

__all__ = ["CODEC_QUALITY_SPREAD", "frame_settings", "face_in_window", "record_burst", "fuse_burst",
           "fused_recording", "record_burst_set", "burst_lr_set"]

CODEC_QUALITY_SPREAD = 5  # per-frame codec quality / CRF wanders this much around the camera's (rate control)


def frame_settings(camera: DegradationParams | None, rng: np.random.Generator) -> DegradationParams | None:
    """One frame of a camera: the same settings, the codec's quality moved by up to CODEC_QUALITY_SPREAD."""
    if camera is None or camera.codec is None:
        return camera
    kind, setting = camera.codec
    wander = int(rng.integers(-CODEC_QUALITY_SPREAD, CODEC_QUALITY_SPREAD + 1))
    return replace(camera, codec=(kind, int(np.clip(setting + wander, 1, 100 if kind == "jpeg" else 51))))


def _moved(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, move, (image.shape[1], image.shape[0]), flags=cv2.INTER_LANCZOS4,
                          borderMode=cv2.BORDER_REFLECT_101)


def face_in_window(size: int) -> tuple[slice, slice]:
    """The face's square inside a recorded window of twice its side (`record_burst`)."""
    return slice(size // 2, size // 2 + size), slice(size // 2, size // 2 + size)


def record_burst(hr: np.ndarray, size: int, camera: DegradationParams, frames: int, rng: np.random.Generator,
                 shake: float = 0.5) -> list[np.ndarray]:
    """`frames` recordings [2 size, 2 size, 3] uint8 of the HR face [S, S, 3] with its context: the face is the
    centre `size` square. Frame 0 is unmoved; the others are moved by up to `shake` recorded pixels per axis."""
    side = hr.shape[0]
    pad = side // 2
    context = cv2.copyMakeBorder(hr, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    hr_per_lr = side / size
    recordings = []
    for t in range(frames):
        dx, dy = (0.0, 0.0) if t == 0 else rng.uniform(-shake, shake, 2) * hr_per_lr
        moved = context if t == 0 else _moved(context, dx, dy)
        recordings.append(degrade_face(moved, 2 * size, frame_settings(camera, rng), rng))
    return recordings


def fuse_burst(recordings: list[np.ndarray]) -> tuple[np.ndarray, int]:
    """(the current recording's face fused with the earlier ones, how many earlier ones registered): the
    runtime's registration and robust average on the windows, then the centre face square."""
    face = face_in_window(recordings[0].shape[0] // 2)
    fused, registered = fuse_windows(recordings[0], recordings[1:], face)
    return fused[face], registered


def fused_recording(hr: np.ndarray, size: int, camera: DegradationParams, frames: int,
                    rng: np.random.Generator) -> np.ndarray:
    """The face as the runtime's SR reads it after fusing a burst of `frames`: [size, size, 3] uint8."""
    fused, _ = fuse_burst(record_burst(hr, size, camera, frames, rng))
    return fused


def record_burst_set(hr: np.ndarray, size: int, level: str, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(current recordings, fused faces), each [N, size, size, 3] uint8, of HR faces [N, S, S, 3], each filmed by
    its own camera drawn from `level` in a burst of `frames`, seeded: the current frame is what a run without
    fusion enhances (and bicubic upscales), the fused face what SR reads with `--fuse-frames`."""
    if level not in LEVELS:
        raise ValueError(f"unknown degradation level {level!r}; expected one of {', '.join(LEVELS)}")
    rng = np.random.default_rng(seed)
    current, fused = [], []
    for face in hr:
        burst = record_burst(face, size, LEVELS[level].params(rng), frames, rng)
        current.append(burst[0][face_in_window(size)])
        fused.append(fuse_burst(burst)[0])
    return np.stack(current), np.stack(fused)


def burst_lr_set(hr: np.ndarray, size: int, level: str, frames: int, seed: int) -> np.ndarray:
    """The fused faces of `record_burst_set`: the fixed validation set of burst-trained models."""
    return record_burst_set(hr, size, level, frames, seed)[1]
