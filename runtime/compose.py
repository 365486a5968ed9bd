"""Views of a processed frame. Pure functions: inputs are never modified, every call returns a new image.

- `overlay`: the frame (optionally upscaled) with every enhanced face pasted back through a feathered mask;
  faces that routing kept (`sr` None) show the frame's own pixels.
- `gallery`: the frame with boxes and track ids, above a strip of faces (enhanced, or the native crop
  interpolated, labelled as such) whose tiles shrink and wrap to fit the number of faces.
- `side_by_side`: per face, the native crop interpolated to the tile size next to the enhanced output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .constants import FEATHER_FRACTION, GALLERY_MAX_ROWS, GALLERY_MIN_THUMB, GALLERY_THUMB_FRACTION
from .detect import Box
from .faces import Square

VIEWS = ("overlay", "gallery", "side-by-side")
BOX_COLOR = (0, 220, 0)
TEXT_COLOR = (255, 255, 255)
LANDMARK_COLOR = (0, 255, 255)  # yellow dots (BGR)
FONT = cv2.FONT_HERSHEY_SIMPLEX
SIDE_BY_SIDE_COLUMNS = 4
SIDE_BY_SIDE_HEADER = 32  # px above the cells for the status line, which would otherwise cover the first labels


@dataclass(frozen=True)
class EnhancedFace:
    """One face of a frame: where it was, what the camera recorded, and (if routed to a model) what the
    network saw and made. `sr` is None when routing kept the source pixels (`route` says why)."""

    track_id: int
    box: Box
    square: Square
    lr: np.ndarray | None  # BGR uint8 at the model's input size (a tiled model: the recorded crop)
    sr: np.ndarray | None  # BGR uint8 at the model's output size (a tiled model: scale x the recorded crop)
    native: np.ndarray | None = None  # BGR uint8, the square crop at the recorded resolution
    route: str = "enhanced"
    model: int | None = 0
    landmarks: np.ndarray | None = None  # [K, 2] (x, y) in the SR image's pixels, from a --with-landmarks model
    kept: str = ""  # why `sr` is None: a key of runtime.routing.KEPT ("" for an enhanced face)

    @property
    def crop(self) -> np.ndarray | None:
        """The face as the camera recorded it (the square crop at its native resolution)."""
        return self.native

    def shown(self, side: int) -> np.ndarray:
        """The face at `side` px: the enhanced output, else the recorded crop interpolated."""
        return resize_square(self.sr if self.sr is not None else self.native, side)

    def landmarks_in_frame(self) -> np.ndarray | None:
        """The landmarks in frame pixels (the SR image covers the face's square), or None."""
        if self.landmarks is None or self.sr is None:
            return None
        scale = self.square.side / self.sr.shape[0]
        return (self.landmarks + 0.5) * scale - 0.5 + np.array([self.square.x, self.square.y], np.float32)


def feather_mask(side: int, fraction: float = FEATHER_FRACTION) -> np.ndarray:
    """float32 (side, side, 1) weights: 1 inside, falling linearly to ~0 over `fraction` of the side."""
    ramp = max(1.0, fraction * side)
    distance = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float32) + 0.5
    edge = np.clip(distance / ramp, 0.0, 1.0)
    return np.minimum(edge[:, None], edge[None, :])[..., None]


def _blend_into(canvas: np.ndarray, patch: np.ndarray, x: int, y: int, mask: np.ndarray) -> None:
    """Alpha-blend `patch` at (x, y) into `canvas` (a private working copy), clipped to the canvas."""
    height, width = canvas.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + patch.shape[1], width), min(y + patch.shape[0], height)
    if x1 <= x0 or y1 <= y0:
        return
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    src = patch[y0 - y:y1 - y, x0 - x:x1 - x].astype(np.float32)
    weight = mask[y0 - y:y1 - y, x0 - x:x1 - x]
    canvas[y0:y1, x0:x1] = (src * weight + region * (1.0 - weight) + 0.5).astype(np.uint8)


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """INTER_AREA down, INTER_CUBIC up."""
    interpolation = cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(image, (side, side), interpolation=interpolation)


def overlay(frame: np.ndarray, faces: list[EnhancedFace], upscale: float = 1.0,
            feather: float = FEATHER_FRACTION) -> np.ndarray:
    """Frame upscaled by `upscale` (INTER_CUBIC, the interpolation faces are compared with) with each enhanced
    face pasted over its square."""
    height, width = frame.shape[:2]
    if upscale == 1.0:
        canvas = frame.copy()
    else:
        canvas = cv2.resize(frame, (round(width * upscale), round(height * upscale)), interpolation=cv2.INTER_CUBIC)
    for face in sorted(faces, key=lambda f: f.square.side):  # larger faces end up on top
        if face.sr is None:
            continue  # routing kept the recorded pixels
        side = max(1, round(face.square.side * upscale))
        _blend_into(canvas, resize_square(face.sr, side), round(face.square.x * upscale),
                    round(face.square.y * upscale), feather_mask(side, feather))
    return canvas


def _label(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.5) -> None:
    """White text on a dark translucent box (readable on bright and dark backgrounds), into a working copy."""
    (w, h), baseline = cv2.getTextSize(text, FONT, scale, 1)
    x0, y0, x1, y1 = max(0, x - 2), max(0, y - h - 3), min(image.shape[1], x + w + 2), min(image.shape[0], y + baseline + 1)
    if x1 > x0 and y1 > y0:
        image[y0:y1, x0:x1] = (image[y0:y1, x0:x1] * 0.35).astype(np.uint8)
    cv2.putText(image, text, (x, y), FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)


def draw_boxes(frame: np.ndarray, faces: list[EnhancedFace]) -> np.ndarray:
    canvas = frame.copy()
    for face in faces:
        x, y, w, h = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOR, 2)
        _label(canvas, f"#{face.track_id}", x, max(12, y - 4))
    return canvas


@dataclass(frozen=True)
class GalleryLayout:
    thumb: int  # tile side in px
    columns: int
    rows: int

    @property
    def capacity(self) -> int:
        return self.columns * self.rows


def gallery_layout(width: int, height: int, face_count: int) -> GalleryLayout:
    """Tiles as tall as the strip (GALLERY_THUMB_FRACTION of the frame height); when the faces do not fit in
    one row, the strip is split into more rows of smaller tiles (not below GALLERY_MIN_THUMB, at most
    GALLERY_MAX_ROWS). The strip's height never changes, so a video's frame size stays constant."""
    strip = gallery_strip_height(height)
    most_rows = max(1, min(GALLERY_MAX_ROWS, strip // GALLERY_MIN_THUMB))
    for rows in range(1, most_rows + 1):
        side = strip // rows
        if (width // side) * rows >= face_count or rows == most_rows:
            return GalleryLayout(side, max(1, width // side), rows)
    raise AssertionError("unreachable")


def gallery_strip_height(frame_height: int) -> int:
    return max(GALLERY_MIN_THUMB, round(frame_height * GALLERY_THUMB_FRACTION))


def gallery(frame: np.ndarray, faces: list[EnhancedFace]) -> np.ndarray:
    """Frame with boxes, above a strip of faces labelled by track id ("SR": enhanced, "native": the recorded
    pixels interpolated). The strip's height depends only on the frame size; faces that do not fit even at
    the smallest tiles are counted in its corner."""
    height, width = frame.shape[:2]
    strip = np.zeros((gallery_strip_height(height), width, 3), np.uint8)
    layout = gallery_layout(width, height, len(faces))
    for slot, face in enumerate(faces[:layout.capacity]):
        top, left = (slot // layout.columns) * layout.thumb, (slot % layout.columns) * layout.thumb
        strip[top:top + layout.thumb, left:left + layout.thumb] = face.shown(layout.thumb)
        tag = "SR" if face.sr is not None else "native"
        _label(strip, f"#{face.track_id} {tag}", left + 3, top + 12, 0.35 if layout.thumb < 96 else 0.5)
    if len(faces) > layout.capacity:
        _label(strip, f"+{len(faces) - layout.capacity}", max(0, width - 48), strip.shape[0] - 8)
    return np.vstack([draw_boxes(frame, faces), strip])


def side_by_side(faces: list[EnhancedFace], slots: int, tile: int) -> np.ndarray:
    """A grid of `slots` cells, each the recorded crop interpolated next to the enhanced face (or the same
    crop, labelled "not enhanced"), `tile` x `tile` each, below an empty header for the status line. The size
    depends only on `slots` and `tile`."""
    columns = min(max(1, slots), SIDE_BY_SIDE_COLUMNS)
    rows = math.ceil(max(1, slots) / columns)
    canvas = np.zeros((SIDE_BY_SIDE_HEADER + rows * tile, columns * 2 * tile, 3), np.uint8)
    for slot, face in enumerate(faces[:slots]):
        top, left = SIDE_BY_SIDE_HEADER + (slot // columns) * tile, (slot % columns) * 2 * tile
        canvas[top:top + tile, left:left + tile] = resize_square(face.native, tile)
        canvas[top:top + tile, left + tile:left + 2 * tile] = face.shown(tile)
        _label(canvas, f"#{face.track_id} recorded", left + 4, top + 16, 0.4)
        _label(canvas, "enhanced" if face.sr is not None else "not enhanced", left + tile + 4, top + 16, 0.4)
    if not faces:
        _label(canvas, "no faces", 8, SIDE_BY_SIDE_HEADER + tile // 2)
    return canvas


def draw_fps(image: np.ndarray, fps: float | None, text: str = "") -> np.ndarray:
    """Copy of `image` with the frame rate (and optional text) in the top-left corner."""
    canvas = image.copy()
    line = f"{fps:.1f} FPS" if fps else "-- FPS"
    scale = max(0.6, canvas.shape[1] / 1600)  # about 1 % of the frame width per character
    _label(canvas, f"{line} {text}".strip(), 8, round(22 * scale / 0.6), scale)
    return canvas


def mark_landmarks(face: EnhancedFace) -> EnhancedFace:
    """A copy of the face whose SR image carries its landmarks as dots (so every view shows them)."""
    if face.landmarks is None or face.sr is None:
        return face
    marked = face.sr.copy()
    radius = max(1, round(marked.shape[0] / 128))
    for x, y in face.landmarks:
        cv2.circle(marked, (round(float(x)), round(float(y))), radius, LANDMARK_COLOR, -1, cv2.LINE_AA)
    return replace(face, sr=marked)


def comparison(face: EnhancedFace, side: int) -> np.ndarray:
    """The recorded crop (interpolated to `side`) beside the enhanced face, labelled; only the recorded crop
    when the face was not enhanced. What a saved crop shows."""
    recorded = resize_square(face.native, side)
    _label(recorded, "recorded", 4, 16, 0.45)
    if face.sr is None:
        return recorded
    enhanced = resize_square(face.sr, side)
    _label(enhanced, "enhanced", 4, 16, 0.45)
    return np.hstack([recorded, enhanced])
