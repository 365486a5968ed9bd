"""MSFSR's facial boundary targets: 11 maps per face, each a Gaussian of the distance to one polyline drawn
through the 68 labelled landmarks (`models.msfsr.BOUNDARIES_68`), at a stage's resolution.

Upstream draws the polylines with OpenCV and blurs them; exact widths are not published. Here the value at a
pixel is exp(-d^2 / (2 sigma^2)), d = the distance from the pixel centre to the nearest segment, with sigma in
that map's pixels, larger at the coarse stages (BOUNDARY_SIGMAS) so the sparse maps are not all background.
"""
from __future__ import annotations

import numpy as np

from models.msfsr import BOUNDARIES_68

__all__ = ["BOUNDARY_SIGMAS", "boundary_maps", "segment_distances"]

BOUNDARY_SIGMAS = (1.0, 1.25, 1.5)  # stages 1, 2, 3 (maps of 16, 32, 64 px for a 16 px input)


def segment_distances(points: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Distance from each grid point [G, 2] to the nearest segment of the polyline `points` [K, 2] -> [G]."""
    start, end = points[:-1], points[1:]  # [S, 2]
    direction = end - start
    length_sq = np.maximum((direction**2).sum(-1), 1e-12)
    t = np.clip(((grid[:, None, :] - start[None]) * direction[None]).sum(-1) / length_sq, 0.0, 1.0)  # [G, S]
    nearest = start[None] + t[..., None] * direction[None]
    return np.sqrt(((grid[:, None, :] - nearest) ** 2).sum(-1)).min(axis=1)


def boundary_maps(landmarks: np.ndarray, size: int, image_size: int, sigma: float) -> np.ndarray:
    """11 boundary maps [11, size, size] (float32, peak 1 on the lines) for one face.

    landmarks: [68, 2] (x, y) in pixel-index coordinates of an `image_size` image; the maps cover the same
    area at `size` px (pixel centres mapped as for an area resize).
    """
    scale = size / image_size
    points = (np.asarray(landmarks, np.float64) + 0.5) * scale - 0.5
    ys, xs = np.mgrid[0:size, 0:size]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    maps = [np.exp(-segment_distances(points[list(indices)], grid) ** 2 / (2 * sigma**2)).reshape(size, size)
            for indices in BOUNDARIES_68]
    return np.stack(maps).astype(np.float32)
