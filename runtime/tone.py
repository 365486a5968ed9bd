"""Keep the recorded tones: a model may add detail to a face, not change its brightness and colour at the
scales the camera resolved. The enhanced image's low frequencies (area-shrunk to the recorded size, blurred by
`TONE_SIGMA_PX` recorded pixels) are set to the recorded pixels' own; what the model added above that band stays.
"""
from __future__ import annotations

import cv2
import numpy as np

from .constants import TONE_SIGMA_PX


def keep_recorded_tones(enhanced: np.ndarray, recorded: np.ndarray, sigma: float = TONE_SIGMA_PX) -> np.ndarray:
    """BGR uint8 `enhanced` (the model's output for the BGR uint8 `recorded` pixels, larger) -> corrected copy."""
    height, width = recorded.shape[:2]
    image = enhanced.astype(np.float32)
    shrunk = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    drift = cv2.GaussianBlur(recorded.astype(np.float32) - shrunk, (0, 0), sigma)
    image += cv2.resize(drift, enhanced.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
