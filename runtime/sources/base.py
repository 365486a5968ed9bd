"""What every source offers: `read(timeout) -> (ReadStatus, frame)`, `close()`, a context manager."""
from __future__ import annotations

import enum

import cv2
import numpy as np

from .uri import SourceURI


class ReadStatus(enum.Enum):
    OK = "ok"  # a frame
    TIMEOUT = "timeout"  # no new frame in time (live sources); try again
    EOS = "eos"  # the source is finished (end of file, last image, source closed)
    ERROR = "error"  # this item could not be read (e.g. a broken image in a folder); the next may work


class Source:
    """Base class. `fps` is the nominal frame rate if known; `frames_dropped` counts frames a live source
    replaced before they were read (it keeps only the newest); `damage` says why a source ended before its
    end (a file that cannot be decoded past some frame), None when it did not."""

    def __init__(self, uri: SourceURI):
        self.uri = uri
        self.frames_dropped = 0
        self.damage: str | None = None

    @property
    def fps(self) -> float | None:
        return None

    @property
    def frame_count(self) -> int | None:
        """Frames the source will give, where known in advance (files, folders); None for live sources."""
        return None

    def read(self, timeout: float | None = None) -> tuple[ReadStatus, np.ndarray | None]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the source; reads after this return EOS."""

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ResizedSource(Source):
    """Another source's frames resized to `width` pixels wide, aspect kept (OpenCV's area filter), as they come
    out: a camera of a lower resolution (jetson-utils' videoSource --input-width). Everything else is the
    inner source's."""

    def __init__(self, inner: Source, width: int):  # no Source.__init__: the counters are the inner source's
        self.inner, self.width, self.uri = inner, width, inner.uri

    def __getattr__(self, name):  # frames_dropped, damage, reconnects, ...
        return getattr(self.inner, name)

    fps = property(lambda self: self.inner.fps)  # properties of Source: __getattr__ never sees them
    frame_count = property(lambda self: self.inner.frame_count)

    def read(self, timeout: float | None = None) -> tuple[ReadStatus, np.ndarray | None]:
        status, frame = self.inner.read(timeout)
        if status is not ReadStatus.OK or frame is None or frame.ndim < 2 or frame.shape[1] == self.width:
            return status, frame
        height = max(1, round(frame.shape[0] * self.width / frame.shape[1]))
        return status, cv2.resize(frame, (self.width, height), interpolation=cv2.INTER_AREA)

    def close(self) -> None:
        self.inner.close()
