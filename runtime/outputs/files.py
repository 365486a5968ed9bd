"""Views written to disk: a video file (cv2.VideoWriter, checked for failed writes) or an image folder."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from ..errors import SinkError
from ..records import ensure_folder
from .base import DEFAULT_FPS, VIDEO_CODECS, Sink

log = logging.getLogger(__name__)

# cv2.VideoWriter.write reports nothing: every this many frames the file is checked for a failed write
SIZE_CHECK_EVERY = 10
# A file that has not grown is only an error when it cannot grow: less than this left on the disk or under the
# process's file size limit. FFmpeg writes in chunks of 256 KB (a quiet, low-bitrate video can go 30 frames
# without growing), and MKV holds whole clusters first, so a small disk with room for a chunk is not full yet;
# whatever this check misses, the read-back on close counts.
NO_ROOM_BYTES = 256 << 10


def _even(n: int) -> int:
    return n + (n % 2)


class VideoFileSink(Sink):
    """cv2.VideoWriter, opened at the first frame's size rounded up to even (most codecs need even sizes).
    Later frames of another size are resized to it.

    OpenCV's writer never reports a failed write (a full disk, a file size limit), so every SIZE_CHECK_EVERY
    frames a file that has stopped growing with no room left is a SinkError, and on close the file is read back:
    fewer playable frames than written is a SinkError that says how many made it."""

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        self.path = Path(path)
        self.fps = fps or DEFAULT_FPS
        self.frames = 0
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._bytes_at_check = 0
        ensure_folder(self.path.parent, "--output")

    def _open(self, view: np.ndarray) -> None:
        self._size = (_even(view.shape[1]), _even(view.shape[0]))
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[self.path.suffix.lower()])
        self._writer = cv2.VideoWriter(str(self.path), fourcc, self.fps, self._size)
        if not self._writer.isOpened():
            raise SinkError(f"--output {self.path}: OpenCV cannot write this video ({self.path.suffix}, "
                            f"{self._size[0]}x{self._size[1]}); try .avi (MJPG) or an image folder.")
        log.info("writing %s (%dx%d, %.1f fps)", self.path, *self._size, self.fps)

    def _fit(self, view: np.ndarray) -> np.ndarray:
        height, width = view.shape[:2]
        if (width, height) == self._size:
            return view
        if (_even(width), _even(height)) == self._size:
            return cv2.copyMakeBorder(view, 0, self._size[1] - height, 0, self._size[0] - width, cv2.BORDER_REPLICATE)
        return cv2.resize(view, self._size, interpolation=cv2.INTER_AREA)

    def write(self, view: np.ndarray, result=None) -> None:
        if self._writer is None:
            self._open(view)
        self._writer.write(self._fit(view))
        self.frames += 1
        if self.frames % SIZE_CHECK_EVERY == 0:
            self._check_growing()

    def _check_growing(self) -> None:
        size = self.path.stat().st_size if self.path.exists() else 0
        if size <= self._bytes_at_check and _room_left(self.path, size) < NO_ROOM_BYTES:
            raise SinkError(f"--output {self.path}: the file stopped growing at {size} bytes while writing frame "
                            f"{self.frames} (disk full or file size limit); check free space.")
        self._bytes_at_check = size

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        playable = playable_frames(self.path, self.frames)
        self.playable = playable
        if playable < self.frames:
            raise SinkError(f"--output {self.path}: {playable} of {self.frames} written frames are playable (disk "
                            "full or file size limit?); check free space.")


def _room_left(path: Path, size: int) -> int:
    """Bytes the file can still grow by: free space on its disk, or less under RLIMIT_FSIZE."""
    room = shutil.disk_usage(path.parent).free
    try:
        import resource  # POSIX only
    except ImportError:
        return room
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return room if limit == resource.RLIM_INFINITY else min(room, limit - size)


def playable_frames(path: Path, expected: int | None = None) -> int:
    """Frames a video file holds when read back (0 if unreadable): the container's count, or, when that is
    short of `expected` (a file cut off before its header or index was written, e.g. AVI and MKV on a full
    disk), the frames that actually decode."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return 0
        reported = max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        if expected is None or reported >= expected:
            return reported
        decoded = 0
        while capture.grab():
            decoded += 1
        return max(reported, decoded)
    finally:
        capture.release()


class ImageFolderSink(Sink):
    """Each view as frame_000000.jpg, frame_000001.jpg, ... Frames an earlier run left in the folder (which the
    run's output claim only allows with --overwrite) are removed first, so the folder never mixes two runs."""

    def __init__(self, folder: str | os.PathLike, suffix: str = ".jpg"):
        self.folder = ensure_folder(Path(folder), "--output")
        self.suffix = suffix
        self.frames = 0
        for old in self.folder.glob("frame_[0-9]*.*"):
            old.unlink()

    def write(self, view: np.ndarray, result=None) -> None:
        path = self.folder / f"frame_{self.frames:06d}{self.suffix}"
        if not cv2.imwrite(str(path), view):
            raise SinkError(f"--output {self.folder}: cannot write {path.name}; check free space and permissions.")
        self.frames += 1
