"""What a camera does to a face before the runtime sees it: optics blur, downscaling, sensor noise, compression.

The blind face restoration family (BSRGAN, Real-ESRGAN, GFPGAN) trains on pairs whose low-resolution side went
through such a chain with random settings. This module is that chain for faces of 8-32 px:

1. optics blur: an isotropic or anisotropic Gaussian, sized in *recorded* pixels (a lens spreads a point over
   about one sensor pixel), applied before the downscale;
2. downscale by a random factor around the recorded size with a random filter (area, bilinear, bicubic), then
   to the recorded size;
3. sensor noise: Gaussian (colour or grey) or Poisson (shot noise, stronger in bright areas);
4. compression: JPEG at a random quality, or an H.264 round trip through PyAV (libx264, the codec of most IP
   cameras), with the face at a random offset to the codec's block grid;
5. sometimes a second, milder round of 1, 3 and 4 (re-encoded streams, `heavy` only).

Three levels name ranges of those settings: `clean` (nothing), `camera` (a decent camera: the mid-range the
benchmarks report) and `heavy` (a cheap, dark or far camera). Every draw comes from a numpy Generator, so a
seed gives the same pairs. `Degradation.params(rng)` draws one face's settings; `apply` runs them.

Colour jitter and greyscale change the scene, not the camera: `jitter_colours` is applied to the HR and LR
together (training.augment), so the model learns to keep the colours it is given.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np

__all__ = ["Degradation", "DegradationParams", "LEVELS", "TRAINING_MIX", "degrade_face", "degrade_image",
           "jitter_colours"]

RESIZE_FILTERS = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


@dataclass(frozen=True)
class Degradation:
    """Ranges of one degradation level; each field is (low, high) drawn uniformly, or a probability.

    Blur sigmas are in recorded pixels, noise sigmas in grey levels (0-255); Poisson scale s gives shot noise
    of sd sqrt(s * value) grey levels at a value (s = 0.4: about 7 levels at mid-grey)."""

    name: str
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.3, 0.8)
    anisotropic_prob: float = 0.4
    resize_jitter: tuple[float, float] = (1.0, 1.0)  # intermediate size / recorded size
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (1.0, 6.0)
    grey_noise_prob: float = 0.4
    poisson_prob: float = 0.3  # share of noisy faces whose noise is Poisson instead of Gaussian
    poisson_scale: tuple[float, float] = (0.05, 0.5)
    compress_prob: float = 0.0
    jpeg_quality: tuple[float, float] = (60.0, 90.0)
    h264_prob: float = 0.5  # share of compressed faces that go through H.264 instead of JPEG
    h264_crf: tuple[float, float] = (22.0, 30.0)
    second_order_prob: float = 0.0

    def params(self, rng: np.random.Generator) -> "DegradationParams":
        """One face's settings. Every value is drawn whether used or not, so the stream of draws (and
        so a seeded run) does not depend on earlier outcomes."""
        u = lambda pair: float(rng.uniform(*pair))  # noqa: E731
        draws = rng.random(8)
        sigma = (u(self.blur_sigma), u(self.blur_sigma))
        angle = float(rng.uniform(0, np.pi))
        jitter, noise_sigma, poisson, quality, crf = (u(self.resize_jitter), u(self.noise_sigma),
                                                       u(self.poisson_scale), u(self.jpeg_quality), u(self.h264_crf))
        resize_filter = list(RESIZE_FILTERS)[int(rng.integers(len(RESIZE_FILTERS)))]
        offset = tuple(int(v) for v in rng.integers(0, 16, 2))
        blur = None
        if draws[0] < self.blur_prob:
            blur = (sigma[0], sigma[1] if draws[1] < self.anisotropic_prob else sigma[0], angle)
        noise = None
        if draws[2] < self.noise_prob:
            kind = "poisson" if draws[3] < self.poisson_prob else "gaussian"
            noise = (kind, poisson if kind == "poisson" else noise_sigma, bool(draws[4] < self.grey_noise_prob))
        codec = None
        if draws[5] < self.compress_prob:
            codec = ("h264", int(round(crf))) if draws[6] < self.h264_prob else ("jpeg", int(round(quality)))
        second = None
        if draws[7] < self.second_order_prob:
            second = SECOND_ORDER.params(rng)
        return DegradationParams(self.name, blur, resize_filter, jitter, noise, codec, offset, second)


@dataclass(frozen=True)
class DegradationParams:
    """One face's drawn settings (see `Degradation`); `offset`: the image's position on the codec's grid."""

    level: str
    blur: tuple[float, float, float] | None = None  # (sigma_x, sigma_y, angle) in recorded pixels
    resize_filter: str = "area"
    resize_jitter: float = 1.0
    noise: tuple[str, float, bool] | None = None  # (gaussian|poisson, sigma or scale, grey)
    codec: tuple[str, int] | None = None  # (jpeg, quality) | (h264, crf)
    offset: tuple[int, int] = (0, 0)
    second: "DegradationParams | None" = field(default=None)

    @property
    def is_clean(self) -> bool:
        return self.blur is None and self.noise is None and self.codec is None and self.resize_jitter == 1.0


SECOND_ORDER = Degradation("second", blur_prob=0.5, blur_sigma=(0.2, 0.5), noise_prob=0.6, noise_sigma=(1.0, 5.0),
                           compress_prob=1.0, jpeg_quality=(40.0, 85.0), h264_crf=(26.0, 34.0))
LEVELS: dict[str, Degradation] = {d.name: d for d in (
    Degradation("clean"),
    Degradation("camera", blur_prob=0.8, blur_sigma=(0.3, 0.8), resize_jitter=(0.85, 1.15), noise_prob=0.9,
                noise_sigma=(1.0, 6.0), poisson_scale=(0.05, 0.4), compress_prob=0.9, jpeg_quality=(55.0, 90.0),
                h264_crf=(22.0, 30.0)),
    Degradation("heavy", blur_prob=1.0, blur_sigma=(0.6, 1.3), resize_jitter=(0.7, 1.2), noise_prob=1.0,
                noise_sigma=(5.0, 14.0), poisson_scale=(0.3, 1.5), compress_prob=1.0, jpeg_quality=(25.0, 55.0),
                h264_crf=(30.0, 38.0), second_order_prob=0.4),
)}
# What training draws from: some clean faces (so clean input does not get worse), mostly camera-like, some heavy.
TRAINING_MIX = (("clean", 0.2), ("camera", 0.55), ("heavy", 0.25))


def draw_training_params(rng: np.random.Generator, mix=TRAINING_MIX) -> DegradationParams:
    names, weights = zip(*mix)
    level = names[int(rng.choice(len(names), p=np.asarray(weights) / sum(weights)))]
    return LEVELS[level].params(rng)


# --- the chain ------------------------------------------------------------------------------------------


def degrade_face(hr: np.ndarray, size: int, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """HR face [S, S, 3] uint8 -> the camera's recording of it at `size` x `size` (uint8)."""
    factor = hr.shape[0] / size
    image = _blur(hr, params.blur, factor) if params.blur else hr
    inner = max(2, int(round(size * params.resize_jitter)))
    image = cv2.resize(image, (inner, inner), interpolation=RESIZE_FILTERS[params.resize_filter])
    if inner != size:
        image = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)
    return _sensor_and_codec(image, params, rng)


def degrade_image(image: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """A whole frame [H, W, 3] uint8 at its recorded size: blur, noise and compression, no resizing."""
    out = _blur(image, params.blur, 1.0) if params.blur else image
    return _sensor_and_codec(out, params, rng)


def _sensor_and_codec(image: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    if params.noise:
        image = _noise(image, params.noise, rng)
    if params.codec:
        image = _compress(image, params.codec, params.offset)
    if params.second is not None:
        image = degrade_image(image, params.second, rng)
    return image


def blur_kernel(sigma_x: float, sigma_y: float, angle: float) -> np.ndarray:
    """A normalised (anisotropic) Gaussian kernel, odd side covering 3 sigma."""
    radius = max(1, int(np.ceil(3 * max(sigma_x, sigma_y))))
    y, x = np.mgrid[-radius:radius + 1, -radius:radius + 1].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * x + s * y, -s * x + c * y
    kernel = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (kernel / kernel.sum()).astype(np.float32)


def _blur(image: np.ndarray, blur, factor: float) -> np.ndarray:
    sigma_x, sigma_y, angle = blur
    kernel = blur_kernel(sigma_x * factor, sigma_y * factor, angle)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _noise(image: np.ndarray, noise, rng: np.random.Generator) -> np.ndarray:
    kind, amount, grey = noise
    x = image.astype(np.float32)
    shape = x.shape[:2] + ((1,) if grey else (3,))
    if kind == "gaussian":
        noisy = x + rng.normal(0.0, amount, shape).astype(np.float32)
    else:  # shot noise: photon counts ~ Poisson(value * levels), levels set by the scale
        levels = 255.0 / max(amount, 1e-3)
        mean = (x if not grey else x.mean(axis=2, keepdims=True)) / 255.0 * levels
        shot = (rng.poisson(mean).astype(np.float32) - mean) / levels * 255.0
        noisy = x + np.broadcast_to(shot, x.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _compress(image: np.ndarray, codec, offset: tuple[int, int]) -> np.ndarray:
    """JPEG or H.264 round trip with the image at `offset` (mod the block size) on the codec's block grid."""
    kind, setting = codec
    h, w = image.shape[:2]
    block = 8 if kind == "jpeg" else 16
    oy, ox = offset[0] % block, offset[1] % block
    # pad to whole blocks (and even sizes for 4:2:0), reflected, with the image at (oy, ox)
    ph, pw = -(-(h + oy) // block) * block, -(-(w + ox) // block) * block
    padded = cv2.copyMakeBorder(image, oy, ph - h - oy, ox, pw - w - ox, cv2.BORDER_REFLECT_101)
    out = _jpeg(padded, setting) if kind == "jpeg" else _h264(padded, setting)
    return out[oy:oy + h, ox:ox + w]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("cv2 could not JPEG-encode an image")
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def _h264(image: np.ndarray, crf: int) -> np.ndarray:
    """One intra frame through libx264 (4:2:0, as cameras stream) and back, with PyAV."""
    try:
        import av
    except ImportError as err:
        raise RuntimeError("the H.264 round trip needs PyAV: pip install av (the [live] extra)") from err
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "yuv420p"
        stream.options = {"crf": str(int(crf)), "preset": "veryfast", "tune": "zerolatency"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(io.BytesIO(buffer.getvalue()), "r", format="h264") as decoded:
        frame = next(decoded.decode(video=0))
        return frame.to_ndarray(format="rgb24")


# --- scene changes (HR and LR together) ----------------------------------------------------------------


def jitter_colours(images: list[np.ndarray], rng: np.random.Generator, grey_prob: float = 0.1,
                   strength: float = 0.1) -> list[np.ndarray]:
    """The same random brightness, contrast and saturation change (or greyscale) for every image given."""
    brightness, contrast, saturation = 1 + rng.uniform(-strength, strength, 3)
    grey = rng.random() < grey_prob
    centre = float(images[0].mean())  # one contrast pivot for all, so HR and LR stay a pair
    out = []
    for image in images:
        x = image.astype(np.float32)
        y = x @ np.array([0.299, 0.587, 0.114], np.float32)
        if grey:
            x = np.repeat(y[..., None], 3, axis=2)
        else:
            x = y[..., None] + saturation * (x - y[..., None])
            x = (x - centre) * contrast + centre
            x = x * brightness
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return out


def degrade_lr_set(hr: np.ndarray, size: int, level: str, seed: int) -> np.ndarray:
    """LR faces [N, size, size, 3] uint8 made from HR faces [N, S, S, 3] at one level, seeded: the fixed
    degraded sets of validation and the benchmarks (each face draws its own settings from the level)."""
    if level not in LEVELS:
        raise ValueError(f"unknown degradation level {level!r}; expected one of {', '.join(LEVELS)}")
    rng = np.random.default_rng(seed)
    return np.stack([degrade_face(face, size, LEVELS[level].params(rng), rng) for face in hr])
