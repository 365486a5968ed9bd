"""What every output offers: `write(view, result)`, `close()`, a context manager; `Outputs` fans a frame out to
several; shared constants."""
from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import SinkError

VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
DEFAULT_FPS = 25.0


class Sink:
    """Base class: `write(view, result)` gets the composed view and the frame's result (faces, tracks, for sinks
    that show more than the picture); `wants_stop` after the user quit a window, `wants_next_view` after the user
    asked for the next view."""

    wants_stop = False
    wants_next_view = False

    def write(self, view: np.ndarray, result=None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class NullSink(Sink):
    def write(self, view: np.ndarray, result=None) -> None:
        pass


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


def display_available() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
