"""Face preparation: square crops framed like the training data, batched as model input, and back.

Pure functions; the frame is never modified.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .constants import FEATHER_FRACTION, FRAMING_OFFSET, FRAMING_SCALE
from .detect import Box, box_centre, box_size
from .frames import hwc_uint8_to_nchw, resample_square
from .track import Track


@dataclass(frozen=True)
class Square:
    """A square region in frame pixels; it may extend past the frame's edges. The corner and side may be
    fractional (see `square_around`'s grid); `crop_square` cuts the nearest whole-pixel square."""

    x: float
    y: float
    side: float

    def whole_pixels(self) -> tuple[int, int, int]:
        return round(self.x), round(self.y), max(1, round(self.side))


@dataclass(frozen=True)
class FaceJob:
    """One face of one frame on its way through the network."""

    track_id: int
    box: Box
    square: Square
    crop: np.ndarray  # BGR uint8, square.side x square.side (native resolution)


def square_around(box: Box, scale: float = FRAMING_SCALE, offset: tuple[float, float] = FRAMING_OFFSET,
                  grid: float = 1.0) -> Square:
    """The square crop that frames this detection like a training crop (see constants.FRAMING_*).

    Corner and side are snapped to 1/grid px (grid 1: whole pixels). On a 10 px face a whole pixel is 10 % of
    its side, which the x8 models feel; with grid = the overlay's --upscale the square sits on the display's
    pixel grid, so the model input is cut at sub-pixel precision (`model_crop`) and the result still pastes
    back onto whole display pixels."""
    size = box_size(box)
    cx, cy = box_centre(box)
    return _snapped_square((cx + offset[0] * size, cy + offset[1] * size), scale * size, grid)


def cover_square(box: Box, grid: float = 1.0, feather: float = FEATHER_FRACTION) -> Square:
    """The square a tiled model enhances (`runtime.tiles`): it needs no training-like framing, so it covers the
    whole detection box, centred on it, with room for the paste-back feather (`feather` of the side) outside the
    box, so that every pixel of the box is enhanced. Snapped to 1/grid px as `square_around`.
    Why: the training-like square (`square_around`) leaves the top of a YuNet box and a feathered rim inside it
    at interpolation; on the group photos at K = 8 (`python -m benchmarks.frames`, `pfsr_tiled_utk`) covering
    the box takes the faces from +0.87 to +0.98 dB over bicubic, for 2 x 2 tiles instead of one (see
    docs/runtime.md, "Tiled models")."""
    return _snapped_square(box_centre(box), max(box[2], box[3]) / (1.0 - 2.0 * feather), grid)


def _snapped_square(centre: tuple[float, float], side: float, grid: float) -> Square:
    """The square of about `side` around `centre`, corner and side snapped to 1/grid px."""
    side = max(1, round(side * grid)) / grid
    return Square(round((centre[0] - side / 2) * grid) / grid, round((centre[1] - side / 2) * grid) / grid, side)


def covering_job(frame: np.ndarray, job: FaceJob, grid: float = 1.0) -> FaceJob:
    """The job re-framed by `cover_square` (for a face routed to a tiled model)."""
    square = cover_square(job.box, grid)
    return FaceJob(job.track_id, job.box, square, crop_square(frame, square))


def crop_square(frame: np.ndarray, square: Square) -> np.ndarray:
    """Copy of the square region; parts outside the frame repeat the nearest edge pixel."""
    height, width = frame.shape[:2]
    x0, y0, side = square.whole_pixels()
    if x0 >= 0 and y0 >= 0 and x0 + side <= width and y0 + side <= height:
        return frame[y0:y0 + side, x0:x0 + side].copy()
    rows = np.clip(np.arange(y0, y0 + side), 0, height - 1)
    cols = np.clip(np.arange(x0, x0 + side), 0, width - 1)
    return frame[rows[:, None], cols[None, :]]


def select_faces(tracks: list[Track], min_face: float, max_faces: int) -> tuple[list[Track], int, int]:
    """(tracks to enhance, largest first; number too small; number over the max_faces limit).

    Only confirmed tracks (see IoUTracker) seen by the latest detection round count: a track coasting
    without a detection (misses > 0) is kept by the tracker for id continuity but shows no face."""
    seen = [t for t in tracks if t.misses == 0 and t.confirmed]
    big_enough = sorted((t for t in seen if box_size(t.box) >= min_face), key=lambda t: box_size(t.box), reverse=True)
    tiny = len(seen) - len(big_enough)
    return big_enough[:max_faces], tiny, max(0, len(big_enough) - max_faces)


def face_jobs(frame: np.ndarray, tracks: list[Track], grid: float = 1.0) -> list[FaceJob]:
    jobs = []
    for track in tracks:
        square = square_around(track.box, grid=grid)
        jobs.append(FaceJob(track.track_id, track.box, square, crop_square(frame, square)))
    return jobs


def resize_crop(crop: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Crop -> the model's input size. Shrinking: PIL's antialiased bicubic, the filter the training LR images
    were made with. Enlarging (a face smaller than the input): OpenCV's bicubic. Measured with
    the routing of `benchmarks.crossover` (PFSR x8, UTK test 100, Y-PSNR at 128 px): faces recorded at
    17 / 20 / 24 px give 25.17 / 25.82 / 26.11 dB with PIL bicubic against 24.52 / 25.13 / 25.69 dB with
    cv2 INTER_AREA; at 12 / 14 px cv2 INTER_CUBIC gives 23.28 / 23.99 dB against 23.06 / 23.72 with PIL bicubic
    and 22.32 / 22.95 with INTER_AREA."""
    if crop.shape[:2] == tuple(size_hw):
        return crop.copy()
    if crop.shape[0] < size_hw[0]:
        return cv2.resize(crop, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_CUBIC)
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size_hw[1], size_hw[0]), Image.BICUBIC))


def model_crop(frame: np.ndarray, job: FaceJob, size_hw: tuple[int, int]) -> np.ndarray:
    """The job's face at the model's input size. A face smaller than the input is interpolated straight from
    the frame at its square's exact (sub-pixel) position, with OpenCV's bicubic as `resize_crop` enlarges; a
    larger one is its whole-pixel crop shrunk by `resize_crop`."""
    square = job.square
    if square.side >= size_hw[0]:
        return resize_crop(job.crop, size_hw)
    return resample_square(frame, square.x, square.y, square.side, size_hw)


def native_region(square: Square, tile: int) -> Square:
    """The whole-pixel square a tiled model enhances for a face (see `runtime.tiles`): at least one tile, centred
    on the face, covering its square with about a pixel to spare (for cutting it back out at sub-pixel
    precision). A face whose square fits in one tile with that margin costs one tile; measured on the group
    photos at K = 8, two pixels of margin instead (2 x 2 tiles for 12-13 px faces) gave the same Y-PSNR at twice
    the SR time."""
    x0, y0 = math.floor(square.x) - 1, math.floor(square.y) - 1
    side = max(math.ceil(square.x + square.side) + 1 - x0, math.ceil(square.y + square.side) + 1 - y0, tile)
    centre_x, centre_y = square.x + square.side / 2, square.y + square.side / 2
    return Square(math.floor(centre_x - side / 2), math.floor(centre_y - side / 2), side)


def square_from_region(enhanced: np.ndarray, region: Square, square: Square) -> np.ndarray:
    """The face's square out of its region's enhanced image (`scale` x the region), at the square's own
    sub-pixel position; an exact copy when the square sits on the enhanced image's pixel grid."""
    scale = enhanced.shape[0] / region.side
    side = max(1, round(square.side * scale))
    return resample_square(enhanced, (square.x - region.x) * scale, (square.y - region.y) * scale,
                           square.side * scale, (side, side))


def to_model_input(small_crops: list[np.ndarray]) -> np.ndarray:
    """BGR uint8 crops (already at the input size) -> float32 [N, 3, H, W] RGB in [0, 1]."""
    if not small_crops:
        raise ValueError("to_model_input needs at least one crop")
    return hwc_uint8_to_nchw(np.stack(small_crops)[..., ::-1])  # BGR -> RGB


def from_model_output(sr: np.ndarray) -> list[np.ndarray]:
    """float32 [N, 3, H, W] RGB in [0, 1] -> BGR uint8 images (values outside [0, 1] are clipped)."""
    images = (np.clip(sr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)[..., ::-1]
    return [np.ascontiguousarray(image) for image in images]
