"""Live sources (cameras, network streams, GStreamer pipelines).

A capture thread reads continuously and keeps only the newest frame, so a slow pipeline always works on
the present instead of a growing backlog (replaced frames are counted in `frames_dropped`). When the
camera or stream is lost, the thread reopens it with exponential backoff and logs each attempt; readers
just see TIMEOUT meanwhile. Only the first open is allowed to fail loudly (a wrong source string).

A driver can also hang inside `read()` and never return. A watchdog thread notices when no read has
returned for `watchdog_s` seconds, abandons that capture thread (it cannot be interrupted; if its read
ever returns it sees it is stale, releases its capture and ends) and starts a new one that reopens the
source.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np

from ..constants import READ_WATCHDOG_S
from ..errors import SourceError
from .base import ReadStatus, Source
from .uri import SourceURI

log = logging.getLogger(__name__)


class Capture(Protocol):
    """The part of cv2.VideoCapture a live source uses (tests pass fakes)."""

    def isOpened(self) -> bool: ...
    def read(self) -> tuple[bool, np.ndarray | None]: ...
    def release(self) -> None: ...


@dataclass
class Backoff:
    """Exponential backoff: initial, initial*factor, ... capped at maximum; reset() starts over."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0
    _next: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.reset()

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self._next * self.factor, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


def _is_open(capture) -> bool:
    return capture is not None and capture.isOpened()


class LiveSource(Source):
    """A capture read on a background thread; `read` returns the newest unread frame.

    Args:
        uri: the parsed source (for messages).
        open_capture: returns a new opened capture (a cv2.VideoCapture or a fake).
        backoff: delays between reopen attempts.
        watchdog_s: a read that has not returned after this long counts as a hung driver (see above).
    """

    def __init__(self, uri: SourceURI, open_capture: Callable[[], Capture], backoff: Backoff | None = None,
                 watchdog_s: float = READ_WATCHDOG_S):
        super().__init__(uri)
        self._open_capture = open_capture
        self._backoff = backoff or Backoff()
        self._watchdog_s = watchdog_s
        self._new_frame = threading.Condition()
        self._frame: np.ndarray | None = None
        self._seq = self._read_seq = 0
        self._stop = threading.Event()
        self._generation = 0
        self._last_progress = time.monotonic()
        self.reconnects = 0
        self.hung_reads = 0
        capture = open_capture()
        if not _is_open(capture):
            raise SourceError(f"cannot open source {uri.text!r} ({uri.scheme}: {uri.location}); check that the "
                              "camera is connected and free, or that the stream URL/pipeline is right.")
        self._thread = self._start_capture(capture)
        self._watchdog = threading.Thread(target=self._watch, name=f"watchdog:{uri.text}", daemon=True)
        self._watchdog.start()

    def _start_capture(self, capture: Capture | None) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(capture, self._generation), daemon=True,
                                  name=f"capture:{self.uri.text}#{self._generation}")
        thread.start()
        return thread

    # --- capture thread ------------------------------------------------------------------------------
    def _current(self, generation: int) -> bool:
        return not self._stop.is_set() and generation == self._generation

    def _run(self, capture: Capture | None, generation: int) -> None:
        while self._current(generation):
            if capture is None:
                capture = self._reopen()
                continue
            ok, frame = self._read(capture)
            if not self._current(generation):
                break  # the watchdog gave up on this thread while it was stuck in read()
            self._last_progress = time.monotonic()
            if ok and frame is not None:
                self._publish(frame)
                continue
            log.warning("lost source %r; will reopen it", self.uri.text)
            capture.release()
            capture = None
        if capture is not None:
            capture.release()

    def _watch(self) -> None:
        """Replace a capture thread whose read() has not returned for `watchdog_s` seconds."""
        while not self._stop.wait(min(1.0, self._watchdog_s / 4)):
            stuck = time.monotonic() - self._last_progress
            if stuck > self._watchdog_s and self._thread.is_alive():
                self.hung_reads += 1
                log.warning("reading %r has not returned for %.1f s (hung driver?): starting a new capture",
                            self.uri.text, stuck)
                self._generation += 1
                self._last_progress = time.monotonic()
                self._thread = self._start_capture(None)

    def _read(self, capture: Capture) -> tuple[bool, np.ndarray | None]:
        try:
            return capture.read()
        except Exception as err:  # a driver error counts as a lost source, not the end of the thread
            log.warning("reading %r failed: %s", self.uri.text, err)
            return False, None

    def _reopen(self) -> Capture | None:
        delay = self._backoff.next_delay()
        log.warning("reopening %r in %.2f s", self.uri.text, delay)
        if self._stop.wait(delay):
            return None
        self._last_progress = time.monotonic()  # waiting to reopen is not a hung read
        try:
            capture = self._open_capture()
        except Exception as err:  # a driver or network error must not end the thread
            log.warning("reopening %r failed: %s", self.uri.text, err)
            return None
        if not _is_open(capture):
            if capture is not None:
                capture.release()
            return None
        self.reconnects += 1
        log.info("reopened %r (reconnect %d)", self.uri.text, self.reconnects)
        return capture

    def _publish(self, frame: np.ndarray) -> None:
        self._backoff.reset()
        with self._new_frame:
            if self._seq > self._read_seq:
                self.frames_dropped += 1
            self._frame = frame
            self._seq += 1
            self._new_frame.notify_all()

    # --- reader side -------------------------------------------------------------------------------
    def read(self, timeout: float | None = None) -> tuple[ReadStatus, np.ndarray | None]:
        with self._new_frame:
            ready = self._new_frame.wait_for(lambda: self._seq > self._read_seq or self._stop.is_set(), timeout)
            if self._stop.is_set():
                return ReadStatus.EOS, None
            if not ready:
                return ReadStatus.TIMEOUT, None
            self._read_seq = self._seq
            return ReadStatus.OK, self._frame

    def close(self) -> None:
        self._stop.set()
        with self._new_frame:
            self._new_frame.notify_all()
        self._thread.join(timeout=5.0)
        self._watchdog.join(timeout=2.0)
        if self._thread.is_alive():
            log.warning("capture thread of %r did not stop within 5 s (blocked in the driver)", self.uri.text)
