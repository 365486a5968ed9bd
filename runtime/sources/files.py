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


# A damaged segment in the middle of a file reads as a few failed frames, then decoding recovers at the next
# key frame; this many failures in a row (about 2 s of 25 fps video) mean the rest cannot be decoded.
MAX_FAILED_READS = 50


class VideoFileSource(Source):
    """A video file decoded with cv2.VideoCapture; every frame in order, then EOS.

    A frame that does not decode reads as ERROR and decoding goes on (past a corrupt segment, to the good
    frames after it). The source ends when it has accounted for the container's frame count, or after
    MAX_FAILED_READS failures in a row; ending short of the frame count sets `damage` (the run then fails
    with a summary that says where)."""

    def __init__(self, uri: SourceURI, open_capture: Callable[[str], object] = cv2.VideoCapture):
        super().__init__(uri)
        path = Path(uri.location)
        if not path.is_file():
            raise SourceError(f"source {uri.text!r}: video file {path} does not exist; expected a video file, "
                              "an image, an image folder, a camera index or a stream URL.")
        self._capture = open_capture(str(path))
        self._decoded = self._failed = self._failed_in_a_row = 0
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
        if self._capture is None or self.damage is not None:
            return ReadStatus.EOS, None
        expected = self.frame_count
        if expected is not None and self._decoded + self._failed >= expected:
            if self._failed_in_a_row:  # the last frames never decoded: the file ends damaged or truncated
                self._give_up(expected)
            return ReadStatus.EOS, None
        ok, frame = self._capture.read()
        if ok and frame is not None:
            self._decoded += 1
            self._failed_in_a_row = 0
            return ReadStatus.OK, frame
        if expected is None:
            return ReadStatus.EOS, None  # no frame count to check against: a failed read is the end
        self._failed += 1
        self._failed_in_a_row += 1
        if self._failed_in_a_row >= MAX_FAILED_READS:
            self._give_up(expected)
            return ReadStatus.EOS, None
        if self._failed_in_a_row == 1:
            log.warning("source %r: frame %d does not decode (damaged file?); reading on", self.uri.text,
                        self._decoded + self._failed)
        return ReadStatus.ERROR, None

    def _give_up(self, expected: int) -> None:
        last_good = self._decoded + self._failed - self._failed_in_a_row
        self.damage = (f"source {self.uri.text!r}: the video does not decode after frame {last_good} of {expected} "
                       f"(a damaged or truncated file); {self._decoded} frames decoded, {self._failed} failed")
        log.error("%s", self.damage)

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
