"""Sources read in order, every frame: a video file, one image, or a folder of images."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..errors import SourceError
from .base import ReadStatus, Source
from .uri import IMAGE_EXTENSIONS, SourceURI

log = logging.getLogger(__name__)


class VideoFileSource(Source):
    """A video file decoded with cv2.VideoCapture; every frame in order, then EOS."""

    def __init__(self, uri: SourceURI, open_capture: Callable[[str], object] = cv2.VideoCapture):
        super().__init__(uri)
        path = Path(uri.location)
        if not path.is_file():
            raise SourceError(f"source {uri.text!r}: video file {path} does not exist; expected a video file, "
                              "an image, an image folder, a camera index or a stream URL.")
        self._capture = open_capture(str(path))
        if not self._capture.isOpened():
            raise SourceError(f"source {uri.text!r}: OpenCV cannot decode {path} as a video; expected a video "
                              "file (.mp4, .avi, .mkv, ...) in a codec this OpenCV build supports.")

    @property
    def fps(self) -> float | None:
        fps = self._capture.get(cv2.CAP_PROP_FPS) if self._capture is not None else 0
        return fps if fps and fps > 0 else None

    @property
    def frame_count(self) -> int | None:
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self._capture is not None else 0
        return count if count > 0 else None

    def read(self, timeout: float | None = None) -> tuple[ReadStatus, np.ndarray | None]:
        if self._capture is None:
            return ReadStatus.EOS, None
        ok, frame = self._capture.read()
        return (ReadStatus.OK, frame) if ok and frame is not None else (ReadStatus.EOS, None)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class ImageListSource(Source):
    """Images read one by one (unchanged: grey and alpha are kept); a broken image reads as ERROR."""

    def __init__(self, uri: SourceURI, paths: list[Path]):
        super().__init__(uri)
        self.paths = list(paths)
        self._next = 0

    @property
    def frame_count(self) -> int | None:
        return len(self.paths)
        self.current_path: Path | None = None

    def read(self, timeout: float | None = None) -> tuple[ReadStatus, np.ndarray | None]:
        if self._next >= len(self.paths):
            return ReadStatus.EOS, None
        self.current_path = self.paths[self._next]
        self._next += 1
        frame = cv2.imread(str(self.current_path), cv2.IMREAD_UNCHANGED)
        if frame is None:
            log.warning("cannot read image %s; skipping it", self.current_path)
            return ReadStatus.ERROR, None
        return ReadStatus.OK, frame

    def close(self) -> None:
        self._next = len(self.paths)


def image_files(folder: Path) -> list[Path]:
    """The images directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def open_image(uri: SourceURI) -> ImageListSource:
    path = Path(uri.location)
    if not path.is_file():
        raise SourceError(f"source {uri.text!r}: image {path} does not exist; check the path.")
    return ImageListSource(uri, [path])


def open_folder(uri: SourceURI) -> ImageListSource:
    folder = Path(uri.location)
    paths = image_files(folder)
    if not paths:
        raise SourceError(f"source {uri.text!r}: folder {folder} holds no images; expected files ending in "
                          f"{', '.join(sorted(IMAGE_EXTENSIONS))}.")
    log.info("image folder %s: %d images", folder, len(paths))
    return ImageListSource(uri, paths)
