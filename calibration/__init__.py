"""Calibration sets for int8 export (LR inputs exactly as the runtime makes them) and TensorRT's legacy cache.

    python -m calibration.collect --source faces-utk:train --out calib.npz --count 512
    python -m calibration.collect --source ../shared/data/scenes/street-video-1080p.mp4 --out video.npz
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from runtime.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = 16  # the x8 models' LR side; a set for another model is collected with --input-size
MIN_COUNT = 32  # fewer inputs than this give unreliable activation ranges
DEFAULT_COUNT = 512
DEFAULT_SOURCE = "faces-utk:train"
FORMAT = "fsr-edge-calibration/1"


class CalibrationError(ValueError):
    """A calibration set or cache that cannot be used; the message says what was received and the fix."""


class StaleCacheError(CalibrationError):
    """A calibration cache made for another model or calibration set: recalibrate."""


def content_hash(lr: np.ndarray) -> str:
    """sha256 of the array's bytes (C order, float32)."""
    return hashlib.sha256(np.ascontiguousarray(lr, dtype=np.float32).tobytes()).hexdigest()


def check_array(lr, min_count: int = MIN_COUNT, what: str = "calibration set",
                input_size: int | None = None) -> np.ndarray:
    """Validate [N,3,S,S] float32 in [0,1] with N >= min_count (and S == input_size when given); returns it
    as contiguous float32."""
    lr = np.asarray(lr)
    square = lr.ndim == 4 and lr.shape[1] == 3 and lr.shape[2] == lr.shape[3]
    if not square or (input_size is not None and lr.shape[2] != input_size):
        side = input_size or "S"
        raise CalibrationError(f"{what}: received shape {lr.shape}, expected [N, 3, {side}, {side}] (RGB LR faces "
                               "at the model's input size, NCHW); make it with `python -m calibration.collect "
                               f"--input-size {input_size or 16}`")
    if lr.dtype != np.float32:
        raise CalibrationError(f"{what}: received dtype {lr.dtype}, expected float32 in [0, 1]")
    if len(lr) < min_count:
        raise CalibrationError(f"{what}: received {len(lr)} inputs, expected at least {min_count} "
                               f"(default {DEFAULT_COUNT}); collect more with --count or another --source")
    if not np.isfinite(lr).all() or lr.min() < 0.0 or lr.max() > 1.0:
        raise CalibrationError(f"{what}: values must be finite and within [0, 1] "
                               f"(received min {np.nanmin(lr):.3g}, max {np.nanmax(lr):.3g})")
    return np.ascontiguousarray(lr)


def save_set(path: str | Path, lr: np.ndarray, source: str, min_count: int = MIN_COUNT) -> dict:
    """Write `lr` with its content hash and source description to an .npz; returns the metadata."""
    lr = check_array(lr, min_count)
    meta = {"format": FORMAT, "sha256": content_hash(lr), "source": source, "count": len(lr)}
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez_compressed(tmp, lr=lr, sha256=np.array(meta["sha256"]), source=np.array(source),
                                format=np.array(FORMAT))
    except OSError as err:  # read-only or full filesystem, missing folder
        raise CalibrationError(f"--out {path}: cannot write the calibration set ({err.strerror or err}); choose a "
                               "writable path.") from err
    return meta


def load_set(path: str | Path, min_count: int = MIN_COUNT, input_size: int | None = None) -> tuple[dict, str]:
    """Read and verify a calibration .npz; returns ({"lr", "sha256", "source"}, description)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError as err:
        raise CalibrationError(f"calibration set {path} not found; make it with `python -m calibration.collect "
                               f"--out {path}`") from err
    except (OSError, ValueError) as err:  # zip/npy damage
        raise CalibrationError(f"calibration set {path} is not a readable .npz ({err}); collect it again") from err
    missing = {"lr", "sha256", "source"} - set(data)
    if missing:
        raise CalibrationError(f"calibration set {path}: missing {', '.join(sorted(missing))}; expected a file "
                               "written by `python -m calibration.collect`")
    lr = check_array(data["lr"], min_count, what=f"calibration set {path}", input_size=input_size)
    stored, actual = str(data["sha256"]), content_hash(lr)
    if stored != actual:
        raise CalibrationError(f"calibration set {path} is corrupted: content sha256 {actual[:12]}... does not "
                               f"match the stored {stored[:12]}...; collect it again")
    source = str(data["source"])
    return {"lr": lr, "sha256": actual, "source": source}, f"{path.name} ({source}, {len(lr)} faces, sha256 {actual[:12]})"
