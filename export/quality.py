"""Image-quality metric shared by the export gates: the official DIC Y-PSNR.

Y-PSNR: BT.601 luma (Y = (65.481 R + 128.553 G + 24.966 B) / 255 + 16, on 0..255 RGB) of uint8 images,
an 8-pixel border cropped from each side, PSNR with peak 255. `training/` computes the same metric;
the two should be merged into one (this one is deliberately minimal: numpy only).
"""
from __future__ import annotations

import numpy as np

_Y_WEIGHTS = np.array([65.481, 128.553, 24.966], dtype=np.float64) / 255.0


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0,1] (any layout) -> uint8 0..255, rounded (the metric's quantisation)."""
    return np.clip(np.round(np.asarray(images, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def y_channel(rgb_uint8: np.ndarray) -> np.ndarray:
    """BT.601 Y (16..235 range) of uint8 RGB in HWC or NHWC layout, as float64."""
    rgb = np.asarray(rgb_uint8)
    if rgb.dtype != np.uint8 or rgb.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB with channels last, received {rgb.dtype} {rgb.shape}")
    return rgb.astype(np.float64) @ _Y_WEIGHTS + 16.0


def y_psnr(a_uint8: np.ndarray, b_uint8: np.ndarray, border: int = 8) -> float:
    """Y-PSNR in dB between two uint8 RGB images (HWC), `border` pixels cropped on every side.

    Returns inf for identical images.
    """
    if np.shape(a_uint8) != np.shape(b_uint8):
        raise ValueError(f"images differ in shape: {np.shape(a_uint8)} vs {np.shape(b_uint8)}")
    ya, yb = y_channel(a_uint8), y_channel(b_uint8)
    if border:
        ya, yb = ya[..., border:-border, border:-border], yb[..., border:-border, border:-border]
    mse = float(np.mean((ya - yb) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def mean_y_psnr(a_nchw: np.ndarray, b_nchw: np.ndarray, border: int = 8) -> float:
    """Mean per-image Y-PSNR of two float [N,3,H,W] batches in [0,1] (uint8-rounded first).

    Identical image pairs (inf dB) are capped at 100 dB so that the mean stays finite.
    """
    a = to_uint8(a_nchw).transpose(0, 2, 3, 1)
    b = to_uint8(b_nchw).transpose(0, 2, 3, 1)
    return float(np.mean([min(y_psnr(x, y, border), 100.0) for x, y in zip(a, b)]))
