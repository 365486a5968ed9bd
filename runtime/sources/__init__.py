"""Frame sources: `parse_uri(text)` -> `SourceURI`, `open_source(uri)` -> a `Source` whose
`read(timeout)` returns `(ReadStatus, frame)`. The scheme table is documented in docs/runtime.md."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2

from ..errors import SourceError
from .base import ReadStatus, ResizedSource, Source
from .files import ImageListSource, VideoFileSource, open_folder, open_image
from .live import Backoff, LiveSource
from .uri import SourceURI, parse_uri

__all__ = ["ReadStatus", "Source", "SourceURI", "SourceOptions", "parse_uri", "open_source", "list_sources",
           "opencv_has",
           "LiveSource", "VideoFileSource", "ImageListSource", "ResizedSource", "Backoff"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceOptions:
    reconnect_initial_s: float = 0.5  # first delay before reopening a lost live source
    reconnect_max_s: float = 10.0  # the delay doubles up to this
    network_timeout_ms: int = 5000  # open/read timeout for network streams (FFmpeg)
    input_width: int | None = None  # resize every frame to this width (aspect kept): a lower-resolution camera


def opencv_has(feature: str) -> bool:
    """Whether this OpenCV build has a video I/O or GUI feature ("GStreamer", "FFMPEG", "V4L/V4L2", "GUI")."""
    for line in cv2.getBuildInformation().splitlines():
        name, _, value = line.strip().partition(":")
        if name.strip() == feature:
            return value.strip().upper() not in ("NO", "NONE", "")
    return False


def _needs_gstreamer(uri: SourceURI) -> None:
    if not opencv_has("GStreamer"):
        raise SourceError(f"source {uri.text!r} needs OpenCV with GStreamer, and the installed OpenCV has none (pip's "
                          "wheels never do). On a Jetson use JetPack's OpenCV (`pip uninstall opencv-python "
                          "opencv-python-headless` so python3 finds /usr/lib/python3/dist-packages/cv2), or build "
                          "OpenCV with -DWITH_GSTREAMER=ON; a USB camera works without it as /dev/video0.")


def list_sources() -> list[str]:
    """What this machine and install can read: cameras found, and which source kinds the OpenCV build supports."""
    cameras = sorted(str(p) for p in Path("/dev").glob("video*"))
    lines = [f"cameras: {', '.join(cameras) if cameras else 'none found (/dev/video*)'}"]
    lines.append(f"video files, rtsp://, http(s)://: {'yes' if opencv_has('FFMPEG') else 'no (OpenCV without FFmpeg)'}")
    lines.append("csi://N and GStreamer pipelines: " + ("yes" if opencv_has("GStreamer") else
                 "no - this OpenCV has no GStreamer (use JetPack's OpenCV on a Jetson)"))
    lines.append("images and image folders: yes")
    return lines


def _capture_factory(uri: SourceURI, options: SourceOptions) -> Callable[[], cv2.VideoCapture]:
    """How to (re)open a live source with OpenCV."""
    if uri.scheme == "camera":
        return lambda: cv2.VideoCapture(int(uri.location))
    if uri.scheme == "v4l2":
        return lambda: cv2.VideoCapture(uri.location, cv2.CAP_V4L2)
    if uri.scheme in ("gstreamer", "csi"):
        _needs_gstreamer(uri)
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
    if options.input_width:
        log.info("frames resized to %d px wide (--input-width)", options.input_width)
        return ResizedSource(source, options.input_width)
    return source
