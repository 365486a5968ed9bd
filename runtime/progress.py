"""Progress on stderr while a run goes: a bar for files and folders (frames known), a status line every
STATUS_EVERY_S seconds for live sources. Quiet when stderr is not a terminal, or with --quiet."""
from __future__ import annotations

import sys
import time

STATUS_EVERY_S = 10.0
BAR_EVERY_S = 0.2
BAR_WIDTH = 30


class Progress:
    """Call `update(...)` after every frame and `close()` at the end."""

    def __init__(self, total: int | None, enabled: bool | None = None, stream=None):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._drawn = False

    def update(self, frames: int, faces: int, fps: float | None, dropped: int = 0, reconnects: int = 0) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < (BAR_EVERY_S if self.total else STATUS_EVERY_S):
            return
        self._last = now
        rate = f"{fps:.1f} FPS" if fps else "-- FPS"
        if self.total:
            done = min(1.0, frames / self.total)
            bar = "#" * round(done * BAR_WIDTH)
            self.stream.write(f"\r[{bar:<{BAR_WIDTH}}] {frames}/{self.total} frames  {rate}  {faces} faces ")
            self._drawn = True
        else:
            self.stream.write(f"status: {frames} frames  {rate}  {faces} faces  {dropped} dropped  "
                              f"{reconnects} reconnects\n")
        self.stream.flush()

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
