"""Where views go: `parse_output(text)` -> `OutputURI`, `open_output(uri)` -> a `Sink` whose `write(view, result)`
gets the composed view and the frame's result. `--output` may repeat; `open_outputs` fans each frame out to all
of them (`Outputs`). The scheme table is in `runtime.outputs.uri` and docs/runtime.md.

    base.py    Sink, NullSink, Outputs, shared constants
    files.py   video files and image folders
    window.py  a cv2 window
    rtsp.py    H.264 over RTSP and RTP (PyAV)
    web.py     the one web server (aiohttp): live page, MJPEG, WebRTC signalling (live.py, webrtc.py)
"""
from __future__ import annotations

import importlib.util
import logging
from typing import Callable

from ..errors import SinkError
from .base import DEFAULT_FPS, VIDEO_CODECS, NullSink, Outputs, Sink, display_available
from .files import ImageFolderSink, VideoFileSink, playable_frames
from .uri import NOT_YET, PARSERS, OutputURI, bind_host, parse_output
from .window import WindowSink

__all__ = ["Sink", "NullSink", "Outputs", "ImageFolderSink", "VideoFileSink", "WindowSink", "OutputURI",
           "parse_output", "open_output", "open_outputs", "file_outputs", "list_outputs", "bind_host",
           "display_available", "playable_frames", "DEFAULT_FPS", "VIDEO_CODECS", "NOT_YET", "PARSERS", "OPENERS"]

log = logging.getLogger(__name__)


def _window(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    if headless:
        raise SinkError(f"--output {uri.text} conflicts with --headless; drop one of them.")
    if not display_available():
        raise SinkError(f"--output {uri.text}, but there is no display ($DISPLAY is not set); use a file, a "
                        "folder or http://@:PORT/.")
    return WindowSink()


# The network outputs import their modules when opened: PyAV, aiohttp and aiortc load only when asked for.
def _rtsp(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    from .rtsp import RtspSink

    return RtspSink(uri.location, fps)


def _rtp(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    from .rtsp import RtpSink

    return RtpSink(uri.location, fps, uri.sdp)


def _web(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    from .web import WebSink

    return WebSink(uri.host, uri.port)


def _webrtc(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    from .web import WebRtcSink

    return WebRtcSink(uri.host, uri.port, uri.name)


OPENERS: dict[str, Callable[[OutputURI, bool, float | None], Sink]] = {
    "display": _window,
    "file": lambda uri, headless, fps: VideoFileSink(uri.location, fps),
    "folder": lambda uri, headless, fps: ImageFolderSink(uri.location),
    "rtsp": _rtsp,
    "rtp": _rtp,
    "http": _web,
    "webrtc": _webrtc,
}


def open_output(uri: OutputURI, headless: bool, fps: float | None) -> Sink:
    return OPENERS[uri.scheme](uri, headless, fps)


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
    from ..sources import opencv_has

    window = "yes" if opencv_has("GUI") else "no - this OpenCV has no GUI (pip install opencv-python)"
    rtsp = "yes" if importlib.util.find_spec("av") else 'no - pip install -e ".[live]"'
    webrtc = "yes" if importlib.util.find_spec("aiortc") else 'no - pip install -e ".[live]"'
    return [f"outputs: video files, image folders, http://@:PORT/ - yes; display://0 - {window}; "
            f"rtsp://, rtp:// - {rtsp}; webrtc:// and http://.../webrtc - {webrtc}; "
            f"{', '.join(f'{scheme}://' for scheme in NOT_YET)} - not in this release"]


def file_outputs(texts: list[str] | None) -> list[str]:
    """The files and folders the --output values write (claimed against overwriting): video files, frame
    folders, and the SDP file of rtp://...?sdp=FILE."""
    uris = list(map(parse_output, texts or []))
    return [uri.location for uri in uris if uri.scheme in ("file", "folder")] + \
        [uri.sdp for uri in uris if uri.scheme == "rtp" and uri.sdp]
