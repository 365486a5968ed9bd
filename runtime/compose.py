"""Views of a processed frame. Pure functions: inputs are never modified, every call returns a new image.

- `overlay`: the frame (optionally upscaled) with every enhanced face pasted back through a feathered mask.
- `gallery`: the frame with boxes and track ids, above a strip of enhanced faces.
- `side_by_side`: per face, the network input upscaled bicubically next to the enhanced output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .constants import FEATHER_FRACTION, GALLERY_THUMB_FRACTION
from .detect import Box
from .faces import Square

VIEWS = ("overlay", "gallery", "side-by-side")
BOX_COLOR = (0, 220, 0)
TEXT_COLOR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
SIDE_BY_SIDE_COLUMNS = 4


@dataclass(frozen=True)
class EnhancedFace:
    """One face after the network: where it was, what the network saw and what it made."""

    track_id: int
    box: Box
    square: Square
    lr: np.ndarray  # BGR uint8 at the model's input size
    sr: np.ndarray  # BGR uint8 at the model's output size


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


def _resize_to(image: np.ndarray, side: int) -> np.ndarray:
    interpolation = cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(image, (side, side), interpolation=interpolation)


def overlay(frame: np.ndarray, faces: list[EnhancedFace], upscale: float = 1.0,
            feather: float = FEATHER_FRACTION) -> np.ndarray:
    """Frame upscaled by `upscale` (INTER_LINEAR) with each enhanced face pasted over its square."""
    height, width = frame.shape[:2]
    if upscale == 1.0:
        canvas = frame.copy()
    else:
        canvas = cv2.resize(frame, (round(width * upscale), round(height * upscale)), interpolation=cv2.INTER_LINEAR)
    for face in sorted(faces, key=lambda f: f.square.side):  # larger faces end up on top
        side = max(1, round(face.square.side * upscale))
        _blend_into(canvas, _resize_to(face.sr, side), round(face.square.x * upscale),
                    round(face.square.y * upscale), feather_mask(side, feather))
    return canvas


def _label(image: np.ndarray, text: str, x: int, y: int, scale: float = 0.5) -> None:
    """Text with a dark outline, drawn into a working copy."""
    cv2.putText(image, text, (x, y), FONT, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (x, y), FONT, scale, TEXT_COLOR, 1, cv2.LINE_AA)


def draw_boxes(frame: np.ndarray, faces: list[EnhancedFace]) -> np.ndarray:
    canvas = frame.copy()
    for face in faces:
        x, y, w, h = (round(v) for v in face.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOR, 2)
        _label(canvas, f"#{face.track_id}", x, max(12, y - 4))
    return canvas


def gallery_strip_height(frame_height: int) -> int:
    return max(48, round(frame_height * GALLERY_THUMB_FRACTION))


def gallery(frame: np.ndarray, faces: list[EnhancedFace]) -> np.ndarray:
    """Frame with boxes, above a strip of enhanced faces labelled by track id. Size depends only on the
    frame size: faces that do not fit in the strip are counted in its corner."""
    height, width = frame.shape[:2]
    thumb = gallery_strip_height(height)
    strip = np.zeros((thumb, width, 3), np.uint8)
    fits = width // thumb
    for slot, face in enumerate(faces[:fits]):
        strip[:, slot * thumb:(slot + 1) * thumb] = _resize_to(face.sr, thumb)
        _label(strip, f"#{face.track_id}", slot * thumb + 4, 16)
    if len(faces) > fits:
        _label(strip, f"+{len(faces) - fits}", max(0, width - 48), thumb - 8)
    return np.vstack([draw_boxes(frame, faces), strip])


def side_by_side(faces: list[EnhancedFace], slots: int, tile: int) -> np.ndarray:
    """A grid of `slots` cells, each the bicubic-upscaled network input next to the enhanced face
    (`tile` x `tile` each). The size depends only on `slots` and `tile`."""
    columns = min(max(1, slots), SIDE_BY_SIDE_COLUMNS)
    rows = math.ceil(max(1, slots) / columns)
    canvas = np.zeros((rows * tile, columns * 2 * tile, 3), np.uint8)
    for slot, face in enumerate(faces[:slots]):
        top, left = (slot // columns) * tile, (slot % columns) * 2 * tile
        canvas[top:top + tile, left:left + tile] = cv2.resize(face.lr, (tile, tile), interpolation=cv2.INTER_CUBIC)
        canvas[top:top + tile, left + tile:left + 2 * tile] = _resize_to(face.sr, tile)
        _label(canvas, f"#{face.track_id} bicubic", left + 4, top + 16, 0.4)
        _label(canvas, "enhanced", left + tile + 4, top + 16, 0.4)
    if not faces:
        _label(canvas, "no faces", 8, min(tile, canvas.shape[0]) // 2)
    return canvas


def draw_fps(image: np.ndarray, fps: float | None, text: str = "") -> np.ndarray:
    """Copy of `image` with the frame rate (and optional text) in the top-left corner."""
    canvas = image.copy()
    line = f"{fps:.1f} FPS" if fps else "-- FPS"
    _label(canvas, f"{line} {text}".strip(), 8, 22, 0.6)
    return canvas
