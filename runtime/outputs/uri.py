"""Parse an `--output` string into an `OutputURI`: one small function per scheme, picked from a table (like
`runtime.sources.uri`; jetson-utils' videoOutput vocabulary).

    display://0            a window (q/Esc quit, space pause, v cycles views); plain `display` too
    out.mp4 | .mkv | .avi  a video file
    DIR                    an image folder (frame_000000.jpg, ...)
    http://@:8080/         the built-in web server: live page, MJPEG at /stream.mjpg, WebRTC at /webrtc, ...
                           (runtime.outputs.web; "@" = every interface, no host = this machine only)
    rtsp://HOST:PORT/PATH  H.264 published to an RTSP server (PyAV; reconnects when the server goes away)
    rtp://HOST:PORT[?sdp=FILE]  H.264 as RTP over UDP (PyAV); the SDP for receivers is logged / written to FILE
    webrtc://@:PORT/NAME   the same web server with only the WebRTC viewer, at http://HOST:PORT/NAME; NAME
                           defaults to "stream"; no STUN/TURN, so LAN only
    v4l2://                not in this release: a clear error (see NOT_YET)

An unknown scheme is an error, never a folder name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import SinkError
from ..uri import URIParts, port_number, split_uri
from .base import VIDEO_CODECS

# schemes of the videoOutput vocabulary that this release does not publish yet, and what to use instead
NOT_YET = {
    "v4l2": "a virtual webcam (v4l2loopback + pyvirtualcam) is not implemented yet",
}
WEBRTC_NAME = re.compile(r"^[A-Za-z0-9_.-]*$")  # one path segment; empty: "stream"


@dataclass(frozen=True)
class OutputURI:
    """One parsed --output: `scheme` (a key of runtime.outputs.OPENERS), `location` (path, window, host:port,
    URL)."""

    scheme: str
    location: str
    text: str
    host: str = ""
    port: int = 0
    sdp: str | None = None  # rtp: where to write the session description
    name: str = ""  # webrtc: the viewer page's path


def bind_host(host: str) -> str:
    """The address a page server binds: '@' every interface (the operator's explicit choice), no host this
    machine only, else the address given."""
    return {"@": "0.0.0.0", "": "127.0.0.1"}.get(host, host)


def _display(text: str, parts: URIParts) -> OutputURI:
    return OutputURI("display", parts.rest or "0", text)


def _http(text: str, parts: URIParts) -> OutputURI:
    port = port_number(parts.port)
    if port is None:
        raise SinkError(f"--output {text}: expected http://HOST:PORT/ with a port, e.g. http://@:8080/ "
                        "(@ = every interface) or http://127.0.0.1:8080/.")
    return OutputURI("http", parts.netloc, text, host=bind_host(parts.host), port=port)


def _rtsp(text: str, parts: URIParts) -> OutputURI:
    if not parts.netloc:
        raise SinkError(f"--output {text}: expected rtsp://HOST[:PORT]/PATH, e.g. rtsp://127.0.0.1:8554/enhanced")
    return OutputURI("rtsp", text, text)


def _rtp(text: str, parts: URIParts) -> OutputURI:
    port = port_number(parts.port)
    sdp = parts.query[len("sdp="):] if parts.query.startswith("sdp=") else None
    if not parts.host or port is None or parts.path not in ("", "/") or (parts.query and not sdp):
        raise SinkError(f"--output {text}: expected rtp://HOST:PORT (the receiver's address) with an optional "
                        "?sdp=FILE, e.g. rtp://192.168.1.20:5004?sdp=enhanced.sdp")
    return OutputURI("rtp", f"rtp://{parts.host}:{port}", text, host=parts.host, port=port, sdp=sdp)


def _webrtc(text: str, parts: URIParts) -> OutputURI:
    port = port_number(parts.port)
    name = parts.path.strip("/")
    if port is None or parts.query or not WEBRTC_NAME.match(name):
        raise SinkError(f"--output {text}: expected webrtc://HOST:PORT/NAME with a port and a one-word NAME, e.g. "
                        "webrtc://@:8555/enhanced (@ = every interface; the page is http://HOST:8555/enhanced).")
    return OutputURI("webrtc", parts.netloc, text, host=bind_host(parts.host), port=port, name=name or "stream")


PARSERS: dict[str, Callable[[str, URIParts], OutputURI]] = {
    "display": _display,
    "http": _http,
    "rtsp": _rtsp,
    "rtp": _rtp,
    "webrtc": _webrtc,
}


def _path(text: str) -> OutputURI:
    """A plain path: a video file by its extension, else an image folder."""
    path = Path(text)
    if path.suffix.lower() in VIDEO_CODECS:
        return OutputURI("file", str(path), text)
    if path.suffix and not path.is_dir():
        raise SinkError(f"--output {text!r}: unknown video type {path.suffix!r}; expected "
                        f"{', '.join(VIDEO_CODECS)}, a folder for images, display://0 or http://@:PORT/.")
    return OutputURI("folder", str(path), text)


def parse_output(text: str) -> OutputURI:
    """--output text -> OutputURI; SinkError for an unknown or not-yet-supported scheme or a bad port."""
    if text == "display":
        return OutputURI("display", "0", text)
    parts = split_uri(text)
    if parts is None:
        return _path(text)
    parser = PARSERS.get(parts.scheme)
    if parser is not None:
        return parser(text, parts)
    if parts.scheme in NOT_YET:
        raise SinkError(f"--output {text}: {NOT_YET[parts.scheme]}. Use http://@:PORT/ (a browser, MJPEG for other "
                        "programs), a video file or display://0.")
    raise SinkError(f"--output {text}: unknown scheme {parts.scheme!r}; expected a video file, a folder, display://0 "
                    "or http://@:PORT/.")
