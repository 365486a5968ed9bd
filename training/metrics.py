"""Evaluation metrics, computed the way the official DIC code does (code/utils/util.py, calc_metrics).

The official test path hands `calc_metrics` uint8 HWC images (SR clamped to [0, 255] and rounded), so:
* Y channel: MATLAB-style BT.601 `rgb2ycbcr` on uint8 input, Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255,
  ROUNDED to uint8 (the uint8 branch of the official function).
* An 8-pixel border (the scale factor) is cropped.
* The official code then multiplies the uint8 Y by 255 before PSNR/SSIM; in uint8 arithmetic that wraps to
  (256 - Y) mod 256. PSNR is unaffected (differences keep their magnitude); SSIM's luminance term sees 256 - Y.
  We reproduce that exactly (`official_wrap=True`) — it is what the published numbers and the shared README's
  bicubic reference (24.12 dB / 0.666 on test) use; SSIM on plain rounded Y differs by < 0.001.
* PSNR with peak 255 (inf for identical images); SSIM with an 11x11 Gaussian window (sigma 1.5), OpenCV
  filter2D (reflect-101 border) then the 5-pixel "valid" crop, C1 = (0.01*255)^2, C2 = (0.03*255)^2, map mean.
* Landmark NME: arg-max of each heatmap * 4, mean point-to-point error divided by the outer-eye-corner
  distance (points 36 and 45) of the ground truth.
* Sharpness (this project's, for GAN weights): mean gradient magnitude of the SR's Y channel over that of the
  HR, on the same cropped region; 1.0 = as much edge energy as the real face, < 1 = blurrier.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["to_uint8", "rgb_to_y", "psnr", "ssim", "y_psnr_ssim", "landmark_nme", "gradient_magnitude",
           "sharpness_ratio", "CROP_BORDER"]

CROP_BORDER = 8
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])


def to_uint8(images) -> np.ndarray:
    """[0, 1] float tensor/array [N, 3, H, W] or [3, H, W] -> uint8 HWC (clamped, rounded)."""
    try:
        import torch

        if isinstance(images, torch.Tensor):
            images = images.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(images, dtype=np.float64)
    arr = np.clip(arr * 255.0, 0, 255).round().astype(np.uint8)
    return np.moveaxis(arr, -3, -1)


def rgb_to_y(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., 3] -> Y (16..235), rounded as the official rgb2ycbcr does for uint8 input (float64 array)."""
    if np.asarray(image).dtype != np.uint8:
        raise TypeError("rgb_to_y expects uint8 RGB (round SR outputs with to_uint8 first)")
    return (np.asarray(image, dtype=np.float64) @ _Y_WEIGHTS / 255.0 + 16.0).round()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    if mse == 0:
        return float("inf")
    return 20 * math.log10(255.0 / math.sqrt(mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Single-channel SSIM on [0, 255] floats (the official/MATLAB-style implementation)."""
    import cv2

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    kernel = cv2.getGaussianKernel(11, 1.5)
    window = np.outer(kernel, kernel.transpose())

    def filt(x):
        return cv2.filter2D(x, -1, window)[5:-5, 5:-5]

    mu1, mu2 = filt(a), filt(b)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    s1 = filt(a * a) - mu1_sq
    s2 = filt(b * b) - mu2_sq
    s12 = filt(a * b) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


def y_psnr_ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int = CROP_BORDER,
                official_wrap: bool = True) -> tuple[float, float]:
    """Y-PSNR and SSIM of one pair of uint8 RGB images [H, W, 3] (the official DIC calc_metrics)."""
    if sr.shape != hr.shape:
        raise ValueError(f"image shapes differ: {sr.shape} vs {hr.shape}")
    y1, y2 = rgb_to_y(sr), rgb_to_y(hr)
    if crop_border:
        y1 = y1[crop_border:-crop_border, crop_border:-crop_border]
        y2 = y2[crop_border:-crop_border, crop_border:-crop_border]
    if official_wrap:  # official: uint8 Y * 255 in uint8 arithmetic == (256 - Y) mod 256
        y1 = (y1.astype(np.uint8) * np.uint8(255)).astype(np.float64)
        y2 = (y2.astype(np.uint8) * np.uint8(255)).astype(np.float64)
    return psnr(y1, y2), ssim(y1, y2)


def landmark_nme(pred: np.ndarray, target: np.ndarray, left: int = 36, right: int = 45) -> np.ndarray:
    """Per-image NME: mean point error / outer-eye-corner distance. pred, target: [N, 68, 2] -> [N]."""
    pred = np.asarray(pred, np.float64)
    target = np.asarray(target, np.float64)
    norm = np.linalg.norm(target[:, left] - target[:, right], axis=-1)
    return np.linalg.norm(pred - target, axis=-1).mean(-1) / norm


def gradient_magnitude(y: np.ndarray) -> float:
    """Mean |gradient| of a 2-D (Y) image, from central differences."""
    gy, gx = np.gradient(np.asarray(y, np.float64))
    return float(np.hypot(gx, gy).mean())


def sharpness_ratio(sr: np.ndarray, hr: np.ndarray, crop_border: int = CROP_BORDER) -> float:
    """Gradient magnitude of SR's Y over HR's (uint8 RGB [H, W, 3] each, border cropped)."""
    c = crop_border
    return gradient_magnitude(rgb_to_y(sr)[c:-c, c:-c]) / gradient_magnitude(rgb_to_y(hr)[c:-c, c:-c])
