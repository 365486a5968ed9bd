"""Image quality for the export accuracy gates: the official DIC Y-PSNR (from `training.metrics`)."""
from __future__ import annotations

import numpy as np

from training.metrics import CROP_BORDER, psnr, rgb_to_y, to_uint8

PSNR_CAP_DB = 100.0  # identical images score inf; capped so that means stay finite


def mean_y_psnr(a_nchw: np.ndarray, b_nchw: np.ndarray, border: int = CROP_BORDER) -> float:
    """Mean per-image Y-PSNR of two float [N,3,H,W] batches in [0,1] (uint8-rounded first, as the
    official metric does), each capped at PSNR_CAP_DB."""
    a, b = to_uint8(a_nchw), to_uint8(b_nchw)
    if a.shape != b.shape:
        raise ValueError(f"batches differ in shape: {a.shape} vs {b.shape}")
    crop = (slice(border, -border),) * 2 if border else (slice(None),) * 2
    return float(np.mean([min(psnr(rgb_to_y(x)[crop], rgb_to_y(y)[crop]), PSNR_CAP_DB) for x, y in zip(a, b)]))
