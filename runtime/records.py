"""What the run leaves behind besides the video: the best crop per track, and a JSONL event log."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np

from .errors import SinkError
from .files import write_bytes_atomic

log = logging.getLogger(__name__)

SHARPNESS_SIZE = 128  # crops are compared for sharpness at one common size


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, at SHARPNESS_SIZE px (comparable across face sizes)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    grey = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def write_image_atomic(path: Path, image: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise SinkError(f"cannot encode an image as {path.suffix!r}; use .png or .jpg.")
    return write_bytes_atomic(path, encoded.tobytes())


def ensure_folder(folder: Path, flag: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SinkError(f"{flag} {folder}: cannot create the folder ({err.strerror}); choose a writable path.") from err
    return folder


class BestCropStore:
    """Keeps one image per track: the best so far by (box size in px, then sharpness); a better one
    overwrites the file atomically."""

    def __init__(self, folder: str | os.PathLike, suffix: str = ".png"):
        self.folder = ensure_folder(Path(folder), "--save-crops")
        self.suffix = suffix
        self._scores: dict[int, tuple[int, float]] = {}

    def path_for(self, track_id: int) -> Path:
        return self.folder / f"track_{track_id:05d}{self.suffix}"

    def offer(self, track_id: int, image: np.ndarray, box_px: float, source_crop: np.ndarray) -> Path | None:
        """Save `image` if it beats this track's best; returns the path if it was written."""
        score = (int(box_px), sharpness(source_crop))
        best = self._scores.get(track_id)
        if best is not None and score <= best:
            return None
        write_image_atomic(self.path_for(track_id), image)
        self._scores[track_id] = score
        return self.path_for(track_id)

    def saved(self, track_id: int) -> Path | None:
        return self.path_for(track_id) if track_id in self._scores else None


class EventLog:
    """One JSON object per line, flushed per line, so another process can follow the file."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        ensure_folder(self.path.parent, "--events")
        try:
            self._file = open(self.path, "w", buffering=1)
        except OSError as err:
            raise SinkError(f"--events {self.path}: cannot open for writing ({err.strerror}).") from err

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
