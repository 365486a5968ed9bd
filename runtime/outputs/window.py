"""`--output display://0`: a cv2 window with keys (q/Esc quit, space pause, v next view)."""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import SinkError
from .base import Sink

QUIT_KEYS = (ord("q"), 27)  # q, Esc
PAUSE_KEY, VIEW_KEY = ord(" "), ord("v")


class WindowSink(Sink):
    """A cv2 window: q or Esc asks the run to stop, space pauses until pressed again, v asks for the next view."""

    def __init__(self, title: str = "fsr-edge"):
        self.title = title

    def write(self, view: np.ndarray, result=None) -> None:
        key = self._show(view, 1)
        if key == PAUSE_KEY:
            key = self._wait_for_key()
        self.wants_stop = key in QUIT_KEYS
        self.wants_next_view = key == VIEW_KEY

    def _show(self, view: np.ndarray, wait_ms: int) -> int:
        try:
            cv2.imshow(self.title, view)
            return cv2.waitKey(wait_ms) & 0xFF
        except cv2.error as err:
            raise SinkError("cannot open a window: this OpenCV build has no GUI support (opencv-python-headless). "
                            "`pip install opencv-python` (and uninstall the headless one), or use --output "
                            "FILE.mp4|DIR|http://@:8080/.") from err

    def _wait_for_key(self) -> int:
        """Paused: the window stays responsive until space (resume), q/Esc or v."""
        while True:
            key = cv2.waitKey(50) & 0xFF
            if key in (PAUSE_KEY, VIEW_KEY, *QUIT_KEYS):
                return key

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
