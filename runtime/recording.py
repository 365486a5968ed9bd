"""How was this face recorded? A per-face gate between a model trained on clean faces and its camera-grade twin.

Weights trained on clean downscales sharpen sensor noise and JPEG/H.264 ringing into false detail; weights
trained on what cameras record (`training.degrade`) are safe there but give back detail on clean faces. The
gate reads three numbers off the face's pixels, at the model's input side (what calibration saw):

- `luma_noise`: Immerkaer's noise estimate on the grey image (high-frequency content a smooth face lacks);
- `luma_residual`: mean difference of the grey image from its 3x3 median (fine texture and speckle);
- `luma_gradient`: mean gradient magnitude (edges: blur and strong compression flatten them).

Only luma: every video codec stores colour at half resolution, so colour detail says "video" rather than "noisy
or compressed", and a gate that read it sent the clean street video's faces to the camera-grade weights.

A logistic model of their logarithms says how likely the camera-grade weights are to do better on this face.
Its coefficients are fitted per model pair on the validation faces at the three degradation levels
(`python -m calibration.recording_gate`), stored in the camera-grade weights' metadata and copied into their
export manifest (`recording_gate`). Pure numpy/OpenCV.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FEATURES = ("luma_noise", "luma_residual", "luma_gradient")
FLOOR = 0.1  # grey levels, before the logarithm (a flat face)
IMMERKAER = np.float32([[1, -2, 1], [-2, 4, -2], [1, -2, 1]])


def recording_features(face: np.ndarray, side: int) -> np.ndarray:
    """The gate's features (their logarithms, float64 [3]) of a BGR uint8 face resized to `side` px."""
    if face.ndim != 3 or face.shape[2] != 3 or face.shape[0] < 3 or face.shape[1] < 3:
        raise ValueError(f"recording_features needs a BGR face of at least 3x3 px, got shape {face.shape}")
    if face.shape[:2] != (side, side):
        shrinking = face.shape[0] > side
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    luma = cv2.cvtColor(face, cv2.COLOR_BGR2YCrCb)[..., 0]
    grey = luma.astype(np.float32)
    response = np.abs(cv2.filter2D(grey, -1, IMMERKAER, borderType=cv2.BORDER_REFLECT))[1:-1, 1:-1]
    luma_noise = 1.4826 * float(np.median(response)) / 6.0
    luma_residual = float(np.abs(grey - cv2.medianBlur(luma, 3)).mean())
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    luma_gradient = float(np.sqrt(gx * gx + gy * gy)[1:-1, 1:-1].mean())
    return np.log(np.maximum([luma_noise, luma_residual, luma_gradient], FLOOR))


@dataclass(frozen=True)
class RecordingGate:
    """Logistic model over standardised `recording_features`: score = sigmoid(w . (f - mean) / scale + bias).
    `side` is the face size the features are taken at (the model's input)."""

    side: int
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float = 0.5
    fitted_on: str = ""  # what calibration used (split, faces, levels), for the manifest's reader
    fitted_to: tuple = ()  # (("clean", digest), ("camera", digest)): the weights' tensors it was fitted for

    def camera_score(self, face: np.ndarray) -> float:
        """0..1: how likely the camera-grade weights beat the clean ones on this face."""
        return float(self.scores(recording_features(face, self.side)[None])[0])

    def scores(self, features: np.ndarray) -> np.ndarray:
        """`camera_score` of faces given as their features ([N, 3])."""
        z = (features - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-np.clip(z @ np.asarray(self.weights) + self.bias, -50.0, 50.0)))

    def prefers_camera(self, face: np.ndarray) -> bool:
        return self.camera_score(face) >= self.threshold

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "side": self.side, "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias, "threshold": self.threshold,
                "fitted_on": self.fitted_on, "fitted_to": dict(self.fitted_to)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "recording_gate") -> "RecordingGate":
        """Checked: a gate written for other features or with malformed numbers is a clear ValueError."""
        if not isinstance(data, dict) or data.get("features") != list(FEATURES):
            raise ValueError(f"{where}: expected a gate over the features {list(FEATURES)}, got "
                             f"{data.get('features') if isinstance(data, dict) else data!r}")
        vectors = {}
        for key in ("mean", "scale", "weights"):
            value = data.get(key)
            if not (isinstance(value, list) and len(value) == len(FEATURES) and all(_finite(v) for v in value)):
                raise ValueError(f"{where}.{key}: expected {len(FEATURES)} finite numbers, got {value!r}")
            vectors[key] = tuple(float(v) for v in value)
        if any(v <= 0 for v in vectors["scale"]):
            raise ValueError(f"{where}.scale: expected positive numbers, got {list(vectors['scale'])}")
        side, bias, threshold = data.get("side"), data.get("bias"), data.get("threshold", 0.5)
        if not (isinstance(side, int) and not isinstance(side, bool) and side >= 3):
            raise ValueError(f"{where}.side: expected an integer of at least 3 px, got {side!r}")
        if not (_finite(bias) and _finite(threshold) and 0 < threshold < 1):
            raise ValueError(f"{where}: bias {bias!r} / threshold {threshold!r}: expected a finite bias and a "
                             "threshold in (0, 1)")
        fitted_to = data.get("fitted_to") or {}
        if not (isinstance(fitted_to, dict) and all(isinstance(v, str) for v in fitted_to.values())):
            raise ValueError(f"{where}.fitted_to: expected {{name: digest}}, got {fitted_to!r}")
        return cls(side, vectors["mean"], vectors["scale"], vectors["weights"], float(bias), float(threshold),
                   str(data.get("fitted_on", "")), tuple(sorted(fitted_to.items())))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def fit_gate(features: np.ndarray, advantage: np.ndarray, side: int, fitted_on: str = "",
             l2: float = 0.01, steps: int = 3000) -> RecordingGate:
    """Logistic regression (gradient descent, L2 on the weights) of "the camera-grade weights do better" on
    `features` ([N, 3], from `recording_features`). `advantage` [N] is the camera-grade weights' gain minus the
    clean ones' (dB): its sign is the target and its size the face's weight, so the faces where the choice
    matters most count most."""
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    z = (features - mean) / scale
    target = (advantage > 0).astype(np.float64)
    importance = np.abs(advantage) / max(float(np.abs(advantage).mean()), 1e-9)
    weights, bias = np.zeros(z.shape[1]), 0.0
    for _ in range(steps):
        residual = importance * (1.0 / (1.0 + np.exp(-(z @ weights + bias))) - target)
        weights -= z.T @ residual / len(target) + l2 * weights
        bias -= float(np.mean(residual))
    return RecordingGate(side, tuple(mean.tolist()), tuple(scale.tolist()), tuple(weights.tolist()), bias,
                         fitted_on=fitted_on)
