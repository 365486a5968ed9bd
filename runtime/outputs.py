"""Outputs are URIs, parsed by a scheme table like the sources (jetson-utils' videoOutput vocabulary).

    display://0            a window (q/Esc quit, space pause, v cycles views)
    out.mp4 | .mkv | .avi  a video file
    DIR                    an image folder (frame_000000.jpg, ...)
    http://@:8080/         a built-in web page: live view, gallery of tracks, events and FPS; MJPEG at
                           /stream.mjpg, events as JSON lines at /events, /snapshot.jpg ("@" = all interfaces)
    rtsp://HOST:PORT/PATH  H.264 published to an RTSP server (PyAV; reconnects when the server goes away)
    rtp://HOST:PORT[?sdp=FILE]  H.264 as RTP over UDP (PyAV); the SDP for receivers is logged / written to FILE
    webrtc://@:PORT/NAME   WebRTC (aiortc): a viewer page at http://HOST:PORT/NAME plays the stream with low latency;
                           NAME defaults to "stream"; no STUN/TURN, so LAN only
    v4l2://                not in this release: a clear error (see NOT_YET)

`--output` may repeat; `open_outputs` fans each frame out to all of them (`Outputs`). An unknown scheme is an
error, never a folder name.
"""
from __future__ import annotations

import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SinkError
from .sinks import VIDEO_CODECS, ImageFolderSink, NullSink, Sink, VideoFileSink, WindowSink, display_available

log = logging.getLogger(__name__)

SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://(.*)$")
# schemes of the videoOutput vocabulary that this release does not publish yet, and what to use instead
NOT_YET = {
    "v4l2": "a virtual webcam (v4l2loopback + pyvirtualcam) is not implemented yet",
}
OUTPUT_SCHEMES = ("display", "file", "folder", "http", "rtsp", "rtp", "webrtc")
WEBRTC_NAME = re.compile(r"^[A-Za-z0-9_.-]*$")  # one path segment; empty: "stream"


@dataclass(frozen=True)
class OutputURI:
    """One parsed --output: `scheme` (see OUTPUT_SCHEMES), `location` (path, window, host:port, URL)."""

    scheme: str
    location: str
    text: str
    host: str = ""
    port: int = 0
    sdp: str | None = None  # rtp: where to write the session description
    name: str = ""  # webrtc: the viewer page's path


def parse_output(text: str) -> OutputURI:
    """--output text -> OutputURI; SinkError for an unknown or not-yet-supported scheme or a bad port."""
    if text == "display":
        return OutputURI("display", "0", text)
    match = SCHEME.match(text)
    if match is None:
        path = Path(text)
        if path.suffix.lower() in VIDEO_CODECS:
            return OutputURI("file", str(path), text)
        if path.suffix and not path.is_dir():
            raise SinkError(f"--output {text!r}: unknown video type {path.suffix!r}; expected "
                            f"{', '.join(VIDEO_CODECS)}, a folder for images, display://0 or http://@:PORT/.")
        return OutputURI("folder", str(path), text)
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme == "display":
        return OutputURI("display", rest or "0", text)
    if scheme == "http":
        return _http(text, rest)
    if scheme == "rtsp":
        if not rest.split("/", 1)[0]:
            raise SinkError(f"--output {text}: expected rtsp://HOST[:PORT]/PATH, e.g. rtsp://127.0.0.1:8554/enhanced")
        return OutputURI("rtsp", text, text)
    if scheme == "rtp":
        return _rtp(text, rest)
    if scheme == "webrtc":
        return _webrtc(text, rest)
    if scheme in NOT_YET:
        raise SinkError(f"--output {text}: {NOT_YET[scheme]}. Use http://@:PORT/ (a browser, MJPEG for other "
                        "programs), a video file or display://0.")
    raise SinkError(f"--output {text}: unknown scheme {scheme!r}; expected a video file, a folder, display://0 or "
                    "http://@:PORT/.")


def _rtp(text: str, rest: str) -> OutputURI:
    hostport, _, query = rest.partition("?")
    host, _, port = hostport.rstrip("/").rpartition(":")
    sdp = query[len("sdp="):] if query.startswith("sdp=") else None
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or (query and not sdp):
        raise SinkError(f"--output {text}: expected rtp://HOST:PORT (the receiver's address) with an optional "
                        "?sdp=FILE, e.g. rtp://192.168.1.20:5004?sdp=enhanced.sdp")
    return OutputURI("rtp", f"rtp://{host}:{port}", text, host=host, port=int(port), sdp=sdp)


def _webrtc(text: str, rest: str) -> OutputURI:
    hostport, _, name = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    name = name.rstrip("/")
    if not port.isdigit() or not 0 < int(port) < 65536 or not WEBRTC_NAME.match(name):
        raise SinkError(f"--output {text}: expected webrtc://HOST:PORT/NAME with a port and a one-word NAME, e.g. "
                        "webrtc://@:8555/enhanced (@ = every interface; the page is http://HOST:8555/enhanced).")
    host = bind_host(host)
    return OutputURI("webrtc", hostport, text, host=host, port=int(port), name=name or "stream")


def bind_host(host: str) -> str:
    """The address a page server binds: '@' every interface (the operator's explicit choice), no host this
    machine only, else the address given."""
    return {"@": "0.0.0.0", "": "127.0.0.1"}.get(host, host)


def _http(text: str, rest: str) -> OutputURI:
    hostport = rest.split("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SinkError(f"--output {text}: expected http://HOST:PORT/ with a port, e.g. http://@:8080/ "
                        "(@ = every interface) or http://127.0.0.1:8080/.")
    host = bind_host(host)
    return OutputURI("http", hostport, text, host=host, port=int(port))


class Outputs(Sink):
    """Every output of a run; a frame goes to each in turn. `wants_stop` / `wants_next_view` when any of them
    asks (a window's keys)."""

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks

    @property
    def wants_stop(self) -> bool:
        return any(sink.wants_stop for sink in self.sinks)

    @property
    def wants_next_view(self) -> bool:  # the window's v key (found by tests/test_runtime_window.py)
        return any(sink.wants_next_view for sink in self.sinks)

    def write(self, view: np.ndarray, result=None) -> None:
        for sink in self.sinks:
            sink.write(view, result)

    def close(self) -> None:
        """Close all, even when one fails (its error is raised after the others are closed)."""
        first_error = None
        for sink in self.sinks:
            try:
                sink.close()
            except SinkError as err:
                first_error = first_error or err
        if first_error is not None:
            raise first_error


def open_output(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    if uri.scheme == "display":
        if headless:
            raise SinkError(f"--output {uri.text} conflicts with --headless; drop one of them.")
        if not display_available():
            raise SinkError(f"--output {uri.text}, but there is no display ($DISPLAY is not set); use a file, a "
                            "folder or http://@:PORT/.")
        return WindowSink()
    if uri.scheme == "file":
        return VideoFileSink(uri.location, fps)
    if uri.scheme == "folder":
        return ImageFolderSink(uri.location)
    if uri.scheme == "rtsp":
        from .rtsp import RtspSink

        return RtspSink(uri.location, fps)
    if uri.scheme == "rtp":
        from .rtsp import RtpSink

        return RtpSink(uri.location, fps, uri.sdp)
    if uri.scheme == "webrtc":
        from .webrtc import WebRtcSink

        return WebRtcSink(uri.host, uri.port, uri.name)
    from .web import WebSink  # the server thread starts only when asked for

    return WebSink(uri.host, uri.port)


def open_outputs(texts: list[str] | None, headless: bool, fps: float | None = None) -> Outputs:
    """All --output values (parsed first, so a typo in the last fails before anything opens); none: a window
    when a display exists, else nothing."""
    uris = [parse_output(text) for text in texts or []]
    if not uris:
        if headless:
            return Outputs([NullSink()])
        if not display_available():
            log.warning("no display ($DISPLAY is not set): not opening a window; pass --output to save the views")
            return Outputs([NullSink()])
        return Outputs([WindowSink()])
    sinks: list[Sink] = []
    try:
        for uri in uris:
            sinks.append(open_output(uri, headless, fps))
    except SinkError:
        Outputs(sinks).close()
        raise
    return Outputs(sinks)


def list_outputs() -> list[str]:
    """Which --output kinds work with this install."""
    from .sources import opencv_has

    window = "yes" if opencv_has("GUI") else "no - this OpenCV has no GUI (pip install opencv-python)"
    try:
        import av  # noqa: F401

        rtsp = "yes"
    except ImportError:
        rtsp = 'no - pip install -e ".[live]"'
    webrtc = "yes" if importlib.util.find_spec("aiortc") else 'no - pip install -e ".[live]"'
    return [f"outputs: video files, image folders, http://@:PORT/ - yes; display://0 - {window}; "
            f"rtsp://, rtp:// - {rtsp}; webrtc:// - {webrtc}; "
            f"{', '.join(f'{scheme}://' for scheme in NOT_YET)} - not in this release"]


def file_outputs(texts: list[str] | None) -> list[str]:
    """The files and folders the --output values write (claimed against overwriting): video files, frame
    folders, and the SDP file of rtp://...?sdp=FILE."""
    uris = list(map(parse_output, texts or []))
    return [uri.location for uri in uris if uri.scheme in ("file", "folder")] + \
        [uri.sdp for uri in uris if uri.scheme == "rtp" and uri.sdp]
