"""Temporal fusion (`--fuse-frames N`): a face's recent frames, registered and averaged before SR.

A camera sees the same face in many frames, each with its own sensor noise, compression and sub-pixel position.
For each face of the current frame, the window around it is cut from the current frame and from the N - 1
frames before it; each earlier window is registered to the current one (phase correlation: the face is nearly
rigid over a few frames) and shifted onto it, windows that do not register (a pose change, an occlusion, a cut)
are left out, and the rest are averaged pixel by pixel with weights that fall off where a pixel differs from the
current frame by more than the noise explains (so motion the registration missed is not smeared in). The noise
is the window's own estimate, raised (up to twice) where the registered frames differ more than it says: a codec
and optics blur hide noise from a spatial estimate, not from frame-to-frame differences. The SR
model then reads the fused window instead of the recorded one; what is shown as "recorded" stays the recording.

Pure numpy/OpenCV; one `TemporalFusion` per source (the frames it keeps are that source's).
"""
from __future__ import annotations

import math
from collections import deque

import cv2
import numpy as np

from .faces import FaceJob

MIN_RESPONSE = 0.2  # phase correlation peak below this: the faces do not show the same thing
MAX_SHIFT_FRACTION = 0.25  # of the face's side: a larger shift is taken for a mismatch
NOISE_SPREAD = 2.0  # a pixel further than this many noise sigmas from the current one gets little weight
MATCH_SIGMAS = 2.0  # a registered face whose RMS difference from the current one exceeds this many noise sigmas
                    # (times sqrt 2: both carry noise) is left out: it moved or changed ...
MATCH_MIN_RMS = 6.0  # ... or this many grey levels, whichever is more (compression differs frame to frame more
                     # than the noise estimate of a small, smoothed face says)
STILL_SHARE = 0.5  # a face fused with at least this share of the earlier frames it was offered counts as still
TEMPORAL_NOISE_CAP = 2.0  # the registered frames' differences may raise a window's noise estimate this much
REGISTER_ECC = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-4)  # ECC's refinement of a window's shift
WINDOW_MIN_PX = 32  # the window around a face: twice its square, at least this (a tiled model's tile and margin)


class TemporalFusion:
    """Keeps the last `frames - 1` frames of one source and fuses the faces of the next one with them."""

    def __init__(self, frames: int):
        if frames < 2:
            raise ValueError(f"fusion needs at least 2 frames, got {frames}")
        self.earlier: deque[np.ndarray] = deque(maxlen=frames - 1)
        self.used = self.offered = 0  # earlier windows averaged in / looked at (how often registration held)
        self.fused_with: list[int] = []  # per job of the last `fuse`: earlier windows averaged into its window
        self.looked_at = 0  # earlier windows each job of the last `fuse` was offered

    def reset(self) -> None:
        """Forget the earlier frames (a new clip)."""
        self.earlier.clear()

    def fuse(self, frame: np.ndarray, jobs: list[FaceJob]) -> np.ndarray | None:
        """A copy of `frame` with every job's window fused with the earlier frames (None when there is nothing
        to fuse with or no face), then remembers `frame`. `fused_with` then says, per job, how many earlier
        windows were averaged into its window."""
        fused, self.fused_with, self.looked_at = None, [0] * len(jobs), len(self.earlier)
        if self.earlier and jobs:
            fused = frame.copy()
            for i, job in enumerate(jobs):
                found = face_window(job, frame.shape)
                if found is not None:
                    window, face = found
                    fused[window], self.fused_with[i] = self._fuse_window(frame, window, face)
        self.earlier.append(frame)
        return fused

    def still(self, fused_with: int) -> bool:
        """Was a face of the last `fuse` still, judged by how many of the earlier frames it was offered were
        averaged in (at least STILL_SHARE of them, and one)? A walking person's face registers with the frame
        before now and then, a face on a still camera with nearly all of them."""
        return fused_with >= max(1, math.ceil(STILL_SHARE * self.looked_at))

    def _fuse_window(self, frame: np.ndarray, window: tuple[slice, slice],
                     face: tuple[slice, slice]) -> tuple[np.ndarray, int]:
        """(the window fused, how many earlier windows went in); the face (inside the window's coordinates) is
        what registration looks at."""
        self.offered += len(self.earlier)
        fused, used = fuse_windows(frame[window], [earlier[window] for earlier in self.earlier], face)
        self.used += used
        return fused, used


def fuse_windows(current: np.ndarray, earlier: list[np.ndarray], face: tuple[slice, slice]) -> tuple[np.ndarray, int]:
    """(`current` (a uint8 window) averaged with the `earlier` windows that register on its `face` and whose
    registered face differs from the current one by no more than the noise explains, how many did); `current`
    itself when none does."""
    reference = current.astype(np.float32)
    moved = [m for m in (register(e.astype(np.float32), reference, face) for e in earlier) if m is not None]
    if not moved:
        return current, 0
    differences = [_grey(m[face]) - _grey(reference[face]) for m in moved]  # each registered face - the current
    sigma = window_noise(reference, differences)
    limit = max(MATCH_SIGMAS * math.sqrt(2) * sigma, MATCH_MIN_RMS)
    aligned = [m for m, d in zip(moved, differences) if float(np.sqrt(np.mean(d ** 2))) <= limit]
    if not aligned:
        return current, 0
    return np.clip(np.rint(robust_average(reference, aligned, sigma)), 0, 255).astype(np.uint8), len(aligned)


def _bounds(cx: float, cy: float, side: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    x0, y0 = max(0, math.floor(cx - side / 2)), max(0, math.floor(cy - side / 2))
    return x0, y0, min(shape[1], math.ceil(cx + side / 2)), min(shape[0], math.ceil(cy + side / 2))


def face_window(job: FaceJob, shape: tuple[int, ...]) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """The whole-pixel window fused for a face (centred on its square, twice its side and at least
    WINDOW_MIN_PX, clipped to the frame) and the face's square inside it; None when too little is inside."""
    square = job.square
    cx, cy = square.x + square.side / 2, square.y + square.side / 2
    x0, y0, x1, y1 = _bounds(cx, cy, max(2.0 * square.side, WINDOW_MIN_PX), shape)
    fx0, fy0, fx1, fy1 = _bounds(cx, cy, square.side, shape)
    if min(x1 - x0, y1 - y0, fx1 - fx0, fy1 - fy0) < 8:
        return None
    return (slice(y0, y1), slice(x0, x1)), (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))


def _grey(image: np.ndarray) -> np.ndarray:
    return image.mean(axis=2) if image.ndim == 3 else image


def register(earlier: np.ndarray, current: np.ndarray, face: tuple[slice, slice]) -> np.ndarray | None:
    """`earlier` (a window) moved onto `current` by the sub-pixel shift that registers their faces, or None
    when the faces do not register. Whether the registered face still shows the same thing is `fuse_windows`'
    question."""
    a, b = _grey(earlier[face]).astype(np.float32), _grey(current[face]).astype(np.float32)
    shift = find_shift(a, b, MIN_RESPONSE, MAX_SHIFT_FRACTION * min(a.shape), REGISTER_ECC)
    if shift is None:
        return None
    warp = np.float32([[1, 0, -shift[0]], [0, 1, -shift[1]]])  # current(x) = earlier(x - d)
    return cv2.warpAffine(earlier, warp, (earlier.shape[1], earlier.shape[0]),
                          flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)


def find_shift(before: np.ndarray, after: np.ndarray, min_response: float, max_shift: float,
               criteria: tuple) -> tuple[float, float] | None:
    """(dx, dy) with after(x) = before(x - d), for two grey float32 images of one size; None when they do not
    register (a phase correlation peak below `min_response`, a shift beyond `max_shift` px, ECC not
    converging). Phase correlation finds the shift (robust to large moves), ECC (`criteria`) refines it (phase
    correlation's sub-pixel peak is biased towards whole pixels on smooth faces)."""
    hann = cv2.createHanningWindow((before.shape[1], before.shape[0]), cv2.CV_32F)
    (dx, dy), response = cv2.phaseCorrelate(before, after, hann)
    if response < min_response or math.hypot(dx, dy) > max_shift:
        return None
    warp = np.float32([[1, 0, -dx], [0, 1, -dy]])
    try:
        _, warp = cv2.findTransformECC(after, before, warp, cv2.MOTION_TRANSLATION, criteria, None, 1)
    except cv2.error:  # ECC did not converge: the faces are too different
        return None
    dx, dy = -float(warp[0, 2]), -float(warp[1, 2])
    return None if math.hypot(dx, dy) > max_shift else (dx, dy)


def window_noise(current: np.ndarray, differences: list[np.ndarray]) -> float:
    """The window's noise in grey levels: `noise_sigma` of the current window, raised towards what the
    registered faces' `differences` from its face say (median absolute difference, the median over them), by at
    most TEMPORAL_NOISE_CAP times. A codec and optics blur smooth noise away from noise_sigma's 3x3 mask (a
    camera with grey noise of 5.6 levels and JPEG 72 reads 2 there), while frame-to-frame differences keep it;
    the cap keeps a face that changed from passing for noise."""
    spatial = noise_sigma(current)
    temporal = float(np.median([1.4826 * np.median(np.abs(d)) / math.sqrt(2) for d in differences]))
    return min(20.0, max(spatial, min(temporal, TEMPORAL_NOISE_CAP * spatial)))


def noise_sigma(image: np.ndarray) -> float:
    """Sensor noise estimate in grey levels: the image filtered by a mask that cancels smooth and linear content
    (Immerkaer 1996; noise of sd s gives a response of sd 6 s), with the median absolute response instead of the
    mean so edges do not count as noise; clamped to [1, 20]."""
    grey = _grey(image).astype(np.float32)
    if min(grey.shape) < 3:
        return 1.0
    mask = np.float32([[1, -2, 1], [-2, 4, -2], [1, -2, 1]])
    response = np.abs(cv2.filter2D(grey, -1, mask, borderType=cv2.BORDER_REFLECT))[1:-1, 1:-1]
    sigma = 1.4826 * float(np.median(response)) / 6.0
    return min(20.0, max(1.0, sigma))


def robust_average(current: np.ndarray, aligned: list[np.ndarray], sigma: float) -> np.ndarray:
    """Per-pixel weighted mean of the current window and the registered earlier ones; an earlier pixel's weight
    falls off with its distance from the current pixel in units of the noise (a temporal bilateral filter)."""
    spread = NOISE_SPREAD * math.sqrt(2) * sigma
    total, weights = current.copy(), np.ones(current.shape[:2] + (1,), np.float32)
    for image in aligned:
        distance = np.abs(_grey(image) - _grey(current))[..., None]
        weight = np.exp(-0.5 * (distance / spread) ** 2)
        total += weight * image
        weights += weight
    return total / weights
