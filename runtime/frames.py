"""Bring any decoded frame to 3-channel BGR uint8 (the one layout the rest of the pipeline handles)."""
from __future__ import annotations

import cv2
import numpy as np

from .errors import SourceError


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype == np.uint16:
        return (frame >> 8).astype(np.uint8)
    if np.issubdtype(frame.dtype, np.floating):
        return (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise SourceError(f"frame dtype {frame.dtype} received; expected uint8, uint16 or float in [0, 1].")


def to_bgr(frame: np.ndarray) -> np.ndarray:
    """Grey (H, W) or (H, W, 1), BGR, or BGRA -> BGR uint8 (a new array unless already BGR uint8)."""
    if frame is None or frame.ndim not in (2, 3) or frame.size == 0:
        shape = None if frame is None else frame.shape
        raise SourceError(f"frame of shape {shape} received; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4).")
    frame = _to_uint8(frame)
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    if channels == 1:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if channels == 3:
        return frame
    if channels == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    raise SourceError(f"frame with {channels} channels received; expected 1 (grey), 3 (BGR) or 4 (BGRA).")


def resample_square(image: np.ndarray, x: float, y: float, side: float, out_hw: tuple[int, int]) -> np.ndarray:
    """The square (x, y, side) of `image`, at any sub-pixel position, resampled to out_hw with OpenCV's bicubic
    (pixel centres aligned: output pixel u samples x + (u + 0.5) * side / width - 0.5); outside the image the
    edge pixels repeat. For enlarging: shrinking this way aliases."""
    step_x, step_y = side / out_hw[1], side / out_hw[0]
    to_image = np.array([[step_x, 0.0, x + 0.5 * step_x - 0.5], [0.0, step_y, y + 0.5 * step_y - 0.5]])
    return cv2.warpAffine(image, to_image, (out_hw[1], out_hw[0]), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def hwc_uint8_to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 images [N, H, W, C] (or one [H, W, C]) -> float32 [N, C, H, W] (or [C, H, W]) in [0, 1].

    The one conversion from decoded pixels to model input; channel order is kept (RGB stays RGB)."""
    images = np.asarray(images)
    axes = (0, 3, 1, 2) if images.ndim == 4 else (2, 0, 1)
    return np.ascontiguousarray(images.transpose(axes), dtype=np.float32) / np.float32(255.0)
