"""Identity with a recogniser nobody here trained: dlib's ResNet face descriptor (99.38 % on LFW).

Needs the benchmark extra's `dlib-bin` (dlib 20, Boost Software License) and `face-recognition-models` (MIT
package; the dlib model files it carries were released by dlib's author into the public domain). Without them,
`FaceDescriber.load()` raises IdentityUnavailable with the install command.

For each face the same box (the labelled landmarks' bounding box) is given to every image of it: the HR, the
bicubic upscale and each model's output, so only the pixels differ. The 5-point shape is predicted on each
image itself, as a recognition pipeline would.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install dlib-bin face-recognition-models (the [bench] extra)"


class IdentityUnavailable(RuntimeError):
    """dlib or its model files are not installed."""


def _model_files() -> tuple[Path, Path]:
    # face_recognition_models' __init__ imports pkg_resources (gone from new setuptools): find its folder only
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailable(f"face-recognition-models is not installed: {INSTALL_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = folder / "shape_predictor_5_face_landmarks.dat", folder / "dlib_face_recognition_resnet_model_v1.dat"
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise IdentityUnavailable(f"{folder} lacks {', '.join(missing)}: reinstall face-recognition-models")
    return files


@dataclass
class FaceDescriber:
    """128-D dlib descriptors of face images."""

    shape_predictor: object
    recogniser: object

    @classmethod
    def load(cls) -> "FaceDescriber":
        try:
            import dlib
        except ImportError as err:
            raise IdentityUnavailable(f"dlib is not installed: {INSTALL_HINT}") from err
        shape_file, recogniser_file = _model_files()
        return cls(dlib.shape_predictor(str(shape_file)), dlib.face_recognition_model_v1(str(recogniser_file)))

    def describe(self, images: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """images [N, H, W, 3] uint8 RGB, boxes [N, 4] (x0, y0, x1, y1) -> descriptors [N, 128]."""
        import dlib

        out = np.empty((len(images), 128), np.float32)
        for i, (image, box) in enumerate(zip(images, boxes)):
            image = np.ascontiguousarray(image)
            rect = dlib.rectangle(*(int(round(v)) for v in box))
            shape = self.shape_predictor(image, rect)
            out[i] = np.asarray(self.recogniser.compute_face_descriptor(image, shape))
        return out


def landmark_boxes(landmarks: np.ndarray, size: int) -> np.ndarray:
    """The labelled landmarks' bounding boxes [N, 4], clipped to the image."""
    low, high = landmarks.min(axis=1), landmarks.max(axis=1)
    return np.clip(np.concatenate([low, high], axis=1), 0, size - 1)


def identity_scores(probe: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per face: descriptor distance to its own HR face, and whether its nearest gallery face is its own
    (rank-1 identification among all faces of the set)."""
    distances = np.linalg.norm(probe[:, None, :] - gallery[None, :, :], axis=2)
    own = distances[np.arange(len(probe)), np.arange(len(probe))]
    return own, distances.argmin(axis=1) == np.arange(len(probe))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over faces with a 95 % bootstrap interval (faces resampled, pairs kept)."""
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
