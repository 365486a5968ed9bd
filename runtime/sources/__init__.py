"""Frame sources: `parse_uri(text)` -> `SourceURI`, `open_source(uri)` -> a `Source` whose
`read(timeout)` returns `(ReadStatus, frame)`. The scheme table is documented in docs/runtime.md."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import cv2

from ..errors import SourceError
from .base import ReadStatus, Source
from .files import ImageListSource, VideoFileSource, open_folder, open_image
from .live import Backoff, LiveSource
from .uri import SourceURI, parse_uri

__all__ = ["ReadStatus", "Source", "SourceURI", "SourceOptions", "parse_uri", "open_source",
           "LiveSource", "VideoFileSource", "ImageListSource", "Backoff"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceOptions:
    reconnect_initial_s: float = 0.5  # first delay before reopening a lost live source
    reconnect_max_s: float = 10.0  # the delay doubles up to this
    network_timeout_ms: int = 5000  # open/read timeout for network streams (FFmpeg)


def _capture_factory(uri: SourceURI, options: SourceOptions) -> Callable[[], cv2.VideoCapture]:
    """How to (re)open a live source with OpenCV."""
    if uri.scheme == "camera":
        return lambda: cv2.VideoCapture(int(uri.location))
    if uri.scheme == "v4l2":
        return lambda: cv2.VideoCapture(uri.location, cv2.CAP_V4L2)
    if uri.scheme in ("gstreamer", "csi"):
        return lambda: cv2.VideoCapture(uri.location, cv2.CAP_GSTREAMER)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, options.network_timeout_ms,
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, options.network_timeout_ms]
    return lambda: cv2.VideoCapture(uri.location, cv2.CAP_FFMPEG, params)


def _open_live(uri: SourceURI, options: SourceOptions) -> LiveSource:
    backoff = Backoff(options.reconnect_initial_s, options.reconnect_max_s)
    return LiveSource(uri, _capture_factory(uri, options), backoff)


OPENERS: dict[str, Callable[[SourceURI, SourceOptions], Source]] = {
    "file": lambda uri, options: VideoFileSource(uri),
    "image": lambda uri, options: open_image(uri),
    "folder": lambda uri, options: open_folder(uri),
}


def open_source(uri: SourceURI | str, options: SourceOptions = SourceOptions()) -> Source:
    """Open a source string or SourceURI; raises SourceError naming the source if it cannot be opened."""
    uri = uri if isinstance(uri, SourceURI) else parse_uri(uri)
    opener = OPENERS.get(uri.scheme, _open_live if uri.is_live else None)
    if opener is None:
        raise SourceError(f"source {uri.text!r}: no opener for scheme {uri.scheme!r}.")
    source = opener(uri, options)
    log.info("opened %s source %s", uri.scheme, uri.location if uri.scheme != "csi" else uri.text)
    return source
