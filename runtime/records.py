"""What the run leaves behind besides the video: the best crop per track, and a JSONL event log."""
from __future__ import annotations

import fcntl
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from .constants import CROP_FILES_KEPT, CROP_SCORES_KEPT
from .errors import SinkError
from .files import write_bytes_atomic

log = logging.getLogger(__name__)

SHARPNESS_SIZE = 128  # crops are compared for sharpness at one common size


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image, at SHARPNESS_SIZE px (comparable across face sizes)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    grey = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def write_image_atomic(path: Path, image: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(path.suffix, image)
    if not ok:
        raise SinkError(f"cannot encode an image as {path.suffix!r}; use .png or .jpg.")
    return write_bytes_atomic(path, encoded.tobytes())


def ensure_folder(folder: Path, flag: str) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SinkError(f"{flag} {folder}: cannot create the folder ({err.strerror}); choose a writable path.") from err
    return folder


class BestCropStore:
    """Keeps one image per track: the best so far by (box size in px, then sharpness); a better one
    overwrites the file atomically. Scores are remembered for the `remember` most recently improved tracks
    only (memory stays fixed on a camera that runs for months; ids are never reused, and a track that has not
    improved for that many other tracks' updates is long gone). Retention: the files of the `keep_files` most
    recently saved tracks stay; an older track's crop is deleted (None: every crop stays, the disk grows)."""

    def __init__(self, folder: str | os.PathLike, suffix: str = ".png", remember: int = CROP_SCORES_KEPT,
                 keep_files: int | None = CROP_FILES_KEPT):
        self.folder = ensure_folder(Path(folder), "--save-crops")
        self.suffix = suffix
        self.remember = remember
        self.keep_files = keep_files  # None: every track's crop stays
        self._scores: OrderedDict[int, tuple[int, float]] = OrderedDict()
        self._files: OrderedDict[int, None] = OrderedDict()  # tracks with a file, oldest first

    def path_for(self, track_id: int) -> Path:
        return self.folder / f"track_{track_id:05d}{self.suffix}"

    def offer(self, track_id: int, image: np.ndarray, box_px: float, source_crop: np.ndarray) -> Path | None:
        """Save `image` if it beats this track's best; returns the path if it was written."""
        score = (int(box_px), sharpness(source_crop))
        best = self._scores.get(track_id)
        if best is not None and score <= best:
            return None
        try:
            write_image_atomic(self.path_for(track_id), image)
        except OSError as err:  # disk full, folder gone: stop the run with what was saved so far
            raise SinkError(f"--save-crops {self.folder}: cannot write {self.path_for(track_id).name} "
                            f"({err.strerror}); the crops saved before it are complete.") from err
        self._scores[track_id] = score
        self._scores.move_to_end(track_id)
        while len(self._scores) > self.remember:
            self._scores.popitem(last=False)
        if self.keep_files is not None:
            self._files[track_id] = None
        while self.keep_files is not None and len(self._files) > self.keep_files:  # retention: oldest track goes
            old, _ = self._files.popitem(last=False)
            self.path_for(old).unlink(missing_ok=True)
            self._scores.pop(old, None)
        return self.path_for(track_id)

    def saved(self, track_id: int) -> Path | None:
        saved = track_id in self._files if self.keep_files is not None else track_id in self._scores
        return self.path_for(track_id) if saved else None


class EventLog:
    """One JSON object per line, flushed per line, so another process can follow the file."""

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = Path(path)
        self._failed = False
        ensure_folder(self.path.parent, "--events")
        try:
            self._file = open(self.path, "a" if append else "w", buffering=1)
        except OSError as err:
            raise SinkError(f"--events {self.path}: cannot open for writing ({err.strerror}).") from err

    def write(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record) + "\n")
        except OSError as err:  # disk full, device gone: stop the run, do not lose events silently
            self._failed = True
            raise SinkError(f"--events {self.path}: write failed ({err.strerror}); the file holds every event "
                            "up to the previous line.") from err

    def close(self) -> None:
        """Close; a failure here (the last line could not be flushed: disk full) is logged, not raised: the run
        has already stopped on the failed write and says so in its summary."""
        try:
            self._file.close()
        except OSError as err:  # after a failed write: the same failure again, already reported
            (log.debug if self._failed else log.error)(
                "--events %s: closing failed (%s); the file holds every event up to its last complete line",
                self.path, err.strerror)

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class OutputClaim:
    """An output path this run will write: refused if it already holds something (unless `overwrite`), and
    locked against a second run writing it at the same time: `.NAME.lock` beside it, held with flock(2) for as
    long as the run lives. The kernel drops the lock when its holder dies, however it dies, so a restarted run
    (PID 1 again in a container) is never refused by a lock of its own past. `release()` removes the lock."""

    def __init__(self, path: str | os.PathLike, flag: str, overwrite: bool = False, append: bool = False):
        self.path = Path(path)
        self.flag = flag
        if self._holds_something() and not (overwrite or append):
            raise SinkError(f"{flag} {self.path} already exists; pass --overwrite to replace it"
                            f"{' (or --append-events to add to it)' if flag == '--events' else ''}, or choose "
                            "another path.")
        self.lock = self.path.parent / f".{self.path.name}.lock"
        ensure_folder(self.path.parent, flag)
        self._fd: int | None = None
        self._take_lock()

    def _holds_something(self) -> bool:
        if self.path.is_dir():
            return any(self.path.iterdir())
        return self.path.exists()

    def _take_lock(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as err:
                raise SinkError(f"{self.flag} {self.path}: cannot create {self.lock} ({err.strerror}).") from err
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                owner = _lock_owner(fd)
                os.close(fd)
                raise SinkError(f"{self.flag} {self.path} is being written by another run (pid {owner}, lock "
                                f"{self.lock}); wait for it or choose another path.") from None
            if _same_file(fd, self.lock):  # not a lock file its previous holder unlinked while we opened it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise SinkError(f"{self.flag} {self.path}: could not take the lock {self.lock}.")

    def release(self) -> None:
        if self._fd is None:
            return
        self.lock.unlink(missing_ok=True)  # while still holding it, so nobody locks a file about to vanish
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "OutputClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _lock_owner(fd: int) -> str:
    """The pid the lock's holder wrote into it (for the message only)."""
    try:
        return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
    return True
