"""Parse a source string into a `SourceURI`: one small function per scheme, picked from a table.

Shorthands are normalised first: `0` -> camera 0, `/dev/video0` -> v4l2, a string containing `!` -> a
GStreamer pipeline, a plain path -> an image, an image folder or a video file (made absolute).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import SourceError
from ..uri import port_number, split_uri

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
LIVE_SCHEMES = frozenset({"camera", "v4l2", "csi", "rtsp", "rtsps", "http", "https", "gstreamer"})
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
# Jetson CSI camera via Argus; the caps are a common 720p mode every Jetson CSI sensor offers.
CSI_PIPELINE = ("nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM),width=1280,height=720,"
                "framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
                "appsink drop=true max-buffers=1")


@dataclass(frozen=True)
class SourceURI:
    """A parsed source.

    scheme: camera, v4l2, csi, rtsp(s), http(s), gstreamer, file (video), image, folder.
    location: what is opened: camera index, device path, URL, pipeline, or absolute path.
    """

    scheme: str
    location: str
    text: str
    port: int | None = None
    path: str = ""
    extension: str = ""

    @property
    def is_live(self) -> bool:
        return self.scheme in LIVE_SCHEMES


def _camera(text: str, rest: str) -> SourceURI:
    if not rest.isdigit():
        raise SourceError(f"source {text!r}: camera index {rest!r} is not a number; expected e.g. 0 or camera://0.")
    return SourceURI("camera", rest, text)


def _v4l2(text: str, rest: str) -> SourceURI:
    device = rest if rest.startswith("/") else f"/dev/{rest}"
    return SourceURI("v4l2", device, text, path=device)


def _csi(text: str, rest: str) -> SourceURI:
    sensor = rest or "0"
    if not sensor.isdigit():
        raise SourceError(f"source {text!r}: CSI sensor id {sensor!r} is not a number; expected e.g. csi://0.")
    return SourceURI("csi", CSI_PIPELINE.format(sensor=sensor), text, path=sensor)


def _network(scheme: str) -> Callable[[str, str], SourceURI]:
    def parse(text: str, rest: str) -> SourceURI:
        parts = split_uri(f"{scheme}://{rest}")
        if not parts.hostname:
            raise SourceError(f"source {text!r} has no host; expected {scheme}://HOST[:PORT]/PATH.")
        port = port_number(parts.port) if parts.port else DEFAULT_PORTS[scheme]
        if port is None:
            raise SourceError(f"source {text!r}: port {parts.port!r} is not a number from 1 to 65535; expected "
                              f"{scheme}://HOST[:PORT]/PATH.")
        return SourceURI(scheme, f"{scheme}://{rest}", text, port=port, path=parts.path,
                         extension=Path(parts.path).suffix.lower())

    return parse


def _gstreamer(text: str, rest: str) -> SourceURI:
    if "appsink" not in rest:
        log.warning("GStreamer pipeline %r has no appsink; OpenCV needs one at the end (… ! appsink)", rest)
    return SourceURI("gstreamer", rest, text)


def _file(text: str, rest: str) -> SourceURI:
    path = Path(os.path.abspath(Path(rest).expanduser()))
    extension = path.suffix.lower()
    if path.is_dir():
        scheme = "folder"
    elif extension in IMAGE_EXTENSIONS:
        scheme = "image"
    else:
        scheme = "file"
    return SourceURI(scheme, str(path), text, path=str(path), extension=extension)


PARSERS: dict[str, Callable[[str, str], SourceURI]] = {
    "camera": _camera,
    "v4l2": _v4l2,
    "csi": _csi,
    "rtsp": _network("rtsp"),
    "rtsps": _network("rtsps"),
    "http": _network("http"),
    "https": _network("https"),
    "gst": _gstreamer,
    "gstreamer": _gstreamer,
    "file": _file,
}

def _split_scheme(text: str) -> tuple[str, str]:
    """(scheme, rest) after normalising shorthands."""
    if "!" in text:
        return "gstreamer", text
    parts = split_uri(text)
    if parts is not None:
        return parts.scheme, parts.rest
    if text.isdigit():
        return "camera", text
    if text.startswith("/dev/video"):
        return "v4l2", text
    return "file", text


def parse_uri(text: str | int) -> SourceURI:
    """Parse a source string (or a camera index); raises SourceError quoting the input."""
    text = str(text).strip()
    if not text:
        raise SourceError("empty source; expected a camera index (0), /dev/video0, a video/image file, an image "
                          "folder, an rtsp:// or http:// URL, or a GStreamer pipeline.")
    scheme, rest = _split_scheme(text)
    parser = PARSERS.get(scheme)
    if parser is None:
        raise SourceError(f"source {text!r}: unknown scheme {scheme!r}; supported: {', '.join(sorted(PARSERS))}.")
    return parser(text, rest)
