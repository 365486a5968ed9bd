"""Steady faces (with `--fuse-frames`): each track's enhanced face blended with its previous one where they agree.

Fusion (`runtime.fusion`) feeds SR a face averaged over its recent frames, but that window slides by one frame
each time and the network turns the small change into a visible one: a still face shimmers. Here each track's
enhanced face is registered onto the same track's previous *output* (the squares' known positions, then phase
correlation and ECC for what the face itself moved) and blended with it, pixel by pixel, with a weight that falls off where
the two differ by more than their typical difference (a mouth that opens, a turn of the head keep the new pixels).
The previous output is itself blended, so a still face settles over a few frames (a recursive filter). Nothing
waits for a later frame: no latency is added. The runtime blends only faces that fusion found still (at least half
of the earlier frames it looked at registered and were averaged in, `TemporalFusion.still`): a walking person's
face changes pose from frame to frame, and blending it with its past blurs it (on the street video, blending
every face that registered with one earlier frame cost 0.2 dB against the 1080p frames). A face that does not
register, or whose squares differ much in size, starts afresh.

Pure numpy/OpenCV; one `SteadyFaces` per source, in frame order.
"""
from __future__ import annotations

import math
from dataclasses import replace

import cv2
import numpy as np

from .compose import EnhancedFace
from .fusion import find_shift

KEEP = 0.7  # weight of the previous output where the two agree (a still face averages over about its last 6 frames)
SPREAD = 2.5  # a pixel that differs by more than this many typical differences keeps little of the previous one
MIN_SPREAD = 2.0  # grey levels: the typical difference is at least this (an identical pair does not freeze)
MAX_TYPICAL = 8.0  # grey levels: two outputs that differ more than this (median) show different things
MIN_RESPONSE = 0.3  # phase correlation peak below this: the faces do not register
MAX_SHIFT_FRACTION = 0.1  # of the side: a larger residual move is not a still face
MAX_SIDE_CHANGE = 0.1  # squares whose sides differ by more than this fraction are not blended
MOTION_ECC = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 1e-3)  # ECC's refinement of a face's motion
MIN_MOTION_PX = 0.25  # output px: a smaller motion found is taken for none
REGISTER_PX = 64  # faces are registered at most this large (ECC at sub-pixel precision there is plenty)


class SteadyFaces:
    """Keeps each track's last shown face and steadies the next one of the same track."""

    def __init__(self):
        self.last: dict[int, EnhancedFace] = {}
        self.blended = self.offered = 0  # faces blended with their previous output / that had one to blend with

    def reset(self) -> None:
        """Forget every track's face (a new clip)."""
        self.last = {}

    def apply(self, faces: list[EnhancedFace], still: list[bool] | None = None) -> list[EnhancedFace]:
        """The faces with each enhanced one blended with its track's previous enhanced face; only the faces
        `still` marks (default: all) are blended. Tracks not in this frame are forgotten (a face that comes back
        starts afresh)."""
        shown, last = [], {}
        for face, is_still in zip(faces, still if still is not None else [True] * len(faces), strict=True):
            previous = self.last.get(face.track_id)
            if face.sr is not None and previous is not None and is_still:
                self.offered += 1
                steadied = steady(face, previous)
                if steadied is not None:
                    self.blended += 1
                    face = replace(face, sr=steadied)
            if face.sr is not None:
                last[face.track_id] = face
            shown.append(face)
        self.last = last
        return shown


def steady(face: EnhancedFace, previous: EnhancedFace) -> np.ndarray | None:
    """`face.sr` blended with `previous.sr` moved onto it, or None when the two do not show the same face."""
    current = face.sr.astype(np.float32)
    current_grey = _grey(current)
    moved = onto(previous, face, current_grey)
    if moved is None:
        return None
    difference = np.abs(_grey(moved) - current_grey)
    typical = 1.4826 * float(np.median(difference))
    if typical > MAX_TYPICAL:
        return None
    spread = SPREAD * max(typical, MIN_SPREAD)
    keep = (KEEP * np.exp(-0.5 * (difference / spread) ** 2))[..., None]
    return np.clip(np.rint(current + keep * (moved - current)), 0, 255).astype(np.uint8)


def onto(previous: EnhancedFace, face: EnhancedFace, face_grey: np.ndarray) -> np.ndarray | None:
    """`previous.sr` (float32) warped onto `face.sr`'s pixels (`face_grey`: their luma, float32): the squares'
    frame positions place it, phase correlation and ECC (`face_motion`) add what the face moved inside its
    square. None when it does not register."""
    side, previous_side = face.square.side, previous.square.side
    if previous.sr is None or abs(side - previous_side) > MAX_SIDE_CHANGE * side:
        return None
    height, width = face.sr.shape[:2]
    step, previous_step = side / width, previous_side / previous.sr.shape[1]  # frame px per output px
    # previous output px = (frame point - previous corner) / previous_step, frame point = corner + current px * step
    scale = step / previous_step
    base = np.float32([[scale, 0, (face.square.x - previous.square.x) / previous_step],
                       [0, scale, (face.square.y - previous.square.y) / previous_step]])
    placed = _warp(_grey(previous.sr.astype(np.float32)), base, (width, height))
    shrink = max(1.0, max(width, height) / REGISTER_PX)  # the motion is found on smaller faces: 4x less work
    small = (round(width / shrink), round(height / shrink))
    moved = face_motion(cv2.resize(placed, small, interpolation=cv2.INTER_AREA),
                        cv2.resize(face_grey, small, interpolation=cv2.INTER_AREA))
    if moved is None:
        return None
    moved = (moved[0] * width / small[0], moved[1] * height / small[1])
    if math.hypot(*moved) < MIN_MOTION_PX:  # registration noise on a still face: resampling would shimmer
        moved = (0.0, 0.0)
    # the face moved by `moved` output px: current px p shows what the placed previous showed at p - moved
    base[:, 2] -= scale * np.float32(moved)
    return _warp(previous.sr, base, (width, height))


def face_motion(before: np.ndarray, after: np.ndarray) -> tuple[float, float] | None:
    """(dx, dy) that `after` moved against `before` (grey float32 of one size), or None when they do not
    register (`fusion.find_shift`, with this module's bounds)."""
    return find_shift(before, after, MIN_RESPONSE, MAX_SHIFT_FRACTION * min(after.shape), MOTION_ECC)


def _warp(image: np.ndarray, to_source: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` sampled at to_source @ (x, y, 1) for every output pixel (x, y)."""
    return cv2.warpAffine(image.astype(np.float32), to_source, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT)


def _grey(image: np.ndarray) -> np.ndarray:
    """Luma of a float32 BGR image (cvtColor: several times faster than a numpy mean over the channels)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
