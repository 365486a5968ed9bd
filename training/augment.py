"""Training pairs that look like the faces the runtime cuts out of whole frames, not like aligned crops.

The shipped pairs are perfectly framed (the 200 px crop, resized) with LR = PIL bicubic of the HR. In a frame,
the square around a detector box is framed a little differently every time (box size varies by ~7 % between
faces, its centre by a few % of the side) and a small face is an area-downscaled region, or a face even
smaller than the model input that the runtime enlarges with cv2's bicubic (`runtime.faces.resize_crop`).
`RealFraming` re-frames each HR (and its landmarks) with a random scale and shift, then makes the LR by one
of those three routes. Validation keeps the clean official pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

__all__ = ["RealFraming", "LR_ROUTES", "TILED_ROUTES"]

LR_ROUTES = ("bicubic", "area", "smaller")  # PIL bicubic (the training convention), cv2 area, area then enlarged
# For models the runtime runs tile by tile (`runtime.tiles`): a face smaller than the input is not enlarged but
# cut at its recorded size with its surroundings; the pair zooms out (reflected past the crop's edges) so the
# face is smallest_native..1 x the window, and the LR is the area-downscaled window.
TILED_ROUTES = ("native",)


@dataclass(frozen=True)
class RealFraming:
    """Random re-framing and LR route per face. `clean_share` of the faces stay as they are."""

    scale_sigma: float = 0.08  # log-normal spread of the crop side (clipped to scale_range)
    scale_range: tuple[float, float] = (0.85, 1.18)
    shift_sigma: float = 0.05  # centre shift, fraction of the side, per axis
    smallest_native: float = 0.6  # "smaller"/"native" routes: native side drawn from [this, 1) x the LR size
    clean_share: float = 0.2
    routes: tuple[str, ...] = LR_ROUTES  # drawn uniformly for each re-framed face

    def __call__(self, hr: np.ndarray, lr: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator):
        """hr [N, S, S, 3], lr [N, s, s, 3] uint8, landmarks [N, K, 2] -> new arrays (inputs untouched)."""
        hr, lr, landmarks = hr.copy(), lr.copy(), landmarks.copy()
        for i in np.flatnonzero(rng.random(len(hr)) >= self.clean_share):
            route = self.routes[rng.integers(len(self.routes))]
            # "native": the whole pair zooms out so the face is smaller than the window, context around it
            zoom_out = 1.0 / rng.uniform(self.smallest_native, 1.0) if route == "native" else 1.0
            hr[i], landmarks[i] = self.reframe(hr[i], landmarks[i], rng, zoom_out)
            lr[i] = self.make_lr(hr[i], lr.shape[1], route, rng)
        return hr, lr, landmarks

    def reframe(self, image: np.ndarray, points: np.ndarray, rng: np.random.Generator, zoom_out: float = 1.0):
        """Crop a square of side scale*S centred at (S/2 + shift) (reflected past the edges), resized back to S;
        `zoom_out` multiplies the random scale."""
        side = image.shape[0]
        scale = zoom_out * float(np.clip(np.exp(rng.normal(0.0, self.scale_sigma)), *self.scale_range))
        shift = rng.normal(0.0, self.shift_sigma, 2) * side
        # output pixel p samples input (p - c) * scale + c + shift, c = the centre in pixel-index coordinates
        centre = (side - 1) / 2
        to_input = np.array([[scale, 0.0, (1 - scale) * centre + shift[0]],
                             [0.0, scale, (1 - scale) * centre + shift[1]]])
        source = image
        if scale > 1.0:
            # zooming out shrinks the image: cubic sampling alone would alias (its kernel does not widen), so
            # shrink with area averaging first and warp the shrunken copy (pixel centres: u' = (u + .5) f - .5)
            shrunk = max(1, round(side / scale))
            factor = shrunk / side
            source = cv2.resize(image, (shrunk, shrunk), interpolation=cv2.INTER_AREA)
            to_input = factor * to_input
            to_input[:, 2] += 0.5 * factor - 0.5
        warped = cv2.warpAffine(source, to_input, (side, side), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REFLECT_101)
        moved = (points - centre - shift) / scale + centre
        return warped, moved.astype(points.dtype)

    def make_lr(self, hr: np.ndarray, size: int, route: str, rng: np.random.Generator) -> np.ndarray:
        if route == "bicubic":
            return np.asarray(Image.fromarray(hr).resize((size, size), Image.BICUBIC))
        if route in ("area", "native"):
            return cv2.resize(hr, (size, size), interpolation=cv2.INTER_AREA)
        if route == "smaller":
            native = max(4, int(round(size * rng.uniform(self.smallest_native, 1.0))))
            small = cv2.resize(hr, (native, native), interpolation=cv2.INTER_AREA)
            return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        raise ValueError(f"unknown LR route {route!r}; expected one of {', '.join(LR_ROUTES + TILED_ROUTES)}")
