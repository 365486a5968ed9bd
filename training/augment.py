"""Training pairs that look like the faces the runtime cuts out of whole frames, not like aligned crops.

The shipped pairs are perfectly framed (the 200 px crop, resized) with LR = PIL bicubic of the HR. In a frame,
the square around a detector box is framed a little differently every time (box size varies by ~7 % between
faces, its centre by a few % of the side) and a small face is an area-downscaled region, or a face even
smaller than the model input that the runtime enlarges with cv2's bicubic (`runtime.faces.resize_crop`).
`RealFraming` re-frames each HR (and its landmarks) with a random scale and shift, then makes the LR by one
of those three routes. With `camera` set (a mix of `training.degrade` levels), every face's LR also goes
through a camera's blur, noise and compression at its recorded size (with `burst`, in a burst of frames fused
as the runtime's `--fuse-frames` fuses them), and a share of the pairs get the same colour change (or
greyscale) on both sides. Validation keeps the clean official pairs.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .burst import fused_recording
from .degrade import degrade_face, draw_training_params, jitter_colours

__all__ = ["RealFraming", "LR_ROUTES", "TILED_ROUTES", "crop_square"]

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
    clean_share: float = 0.2  # share of faces kept as framed (their LR still meets the camera, if any)
    routes: tuple[str, ...] = LR_ROUTES  # drawn uniformly for each re-framed face
    camera: tuple[tuple[str, float], ...] | None = None  # (degradation level, weight) pairs; None: clean LRs
    colour_jitter_share: float = 0.3  # with `camera`: pairs whose colours change (HR and LR alike)
    burst: int = 0  # with `camera`: >= 2 films each face in a burst of 2..burst frames, fused (training.burst)

    def __call__(self, hr: np.ndarray, lr: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator):
        """hr [N, S, S, 3], lr [N, s, s, 3] uint8, landmarks [N, K, 2] -> new arrays (inputs untouched)."""
        hr, lr, landmarks = hr.copy(), lr.copy(), landmarks.copy()
        reframed = rng.random(len(hr)) >= self.clean_share
        for i in range(len(hr)):
            if reframed[i]:
                route = self.routes[rng.integers(len(self.routes))]
                # "native": the whole pair zooms out so the face is smaller than the window, context around it
                zoom_out = 1.0 / rng.uniform(self.smallest_native, 1.0) if route == "native" else 1.0
                hr[i], landmarks[i] = self.reframe(hr[i], landmarks[i], rng, zoom_out)
            elif self.camera is None:
                continue
            else:
                route = "bicubic"
            if self.camera is not None and rng.random() < self.colour_jitter_share:
                (hr[i],) = jitter_colours([hr[i]], rng)
            lr[i] = self.make_lr(hr[i], lr.shape[1], route, rng)
        return hr, lr, landmarks

    def reframe(self, image: np.ndarray, points: np.ndarray, rng: np.random.Generator, zoom_out: float = 1.0):
        """Crop a square of side scale*S centred at (S/2 + shift) (reflected past the edges), resized back to S;
        `zoom_out` multiplies the random scale."""
        side = image.shape[0]
        scale = zoom_out * float(np.clip(np.exp(rng.normal(0.0, self.scale_sigma)), *self.scale_range))
        shift = rng.normal(0.0, self.shift_sigma, 2) * side
        return crop_square(image, points, scale, shift)


    def make_lr(self, hr: np.ndarray, size: int, route: str, rng: np.random.Generator) -> np.ndarray:
        if self.camera is not None:
            return self._camera_lr(hr, size, route, rng)
        if route == "bicubic":
            return np.asarray(Image.fromarray(hr).resize((size, size), Image.BICUBIC))
        if route in ("area", "native"):
            return cv2.resize(hr, (size, size), interpolation=cv2.INTER_AREA)
        if route == "smaller":
            native = max(4, int(round(size * rng.uniform(self.smallest_native, 1.0))))
            small = cv2.resize(hr, (native, native), interpolation=cv2.INTER_AREA)
            return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        raise ValueError(f"unknown LR route {route!r}; expected one of {', '.join(LR_ROUTES + TILED_ROUTES)}")

    def _camera_lr(self, hr: np.ndarray, size: int, route: str, rng: np.random.Generator) -> np.ndarray:
        """The camera records the face at its native size ("smaller": below the input, then enlarged by the
        runtime's cv2 bicubic; every other route: at the input size) with a drawn degradation."""
        if route not in LR_ROUTES + TILED_ROUTES:
            raise ValueError(f"unknown LR route {route!r}; expected one of {', '.join(LR_ROUTES + TILED_ROUTES)}")
        native = size
        if route == "smaller":
            native = max(4, int(round(size * rng.uniform(self.smallest_native, 1.0))))
        camera = draw_training_params(rng, self.camera)
        if self.burst >= 2:
            recorded = fused_recording(hr, native, camera, int(rng.integers(2, self.burst + 1)), rng)
        else:
            recorded = degrade_face(hr, native, camera, rng)
        if native == size:
            return recorded
        return cv2.resize(recorded, (size, size), interpolation=cv2.INTER_CUBIC)


def crop_square(image: np.ndarray, points: np.ndarray, scale: float, shift=(0.0, 0.0)):
    """The square of side scale*S centred at (S/2 + shift) of a square image (reflected past its edges),
    resized back to S, and the points moved with it. scale > 1 frames the face more loosely."""
    side = image.shape[0]
    shift = np.asarray(shift, np.float64)
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
