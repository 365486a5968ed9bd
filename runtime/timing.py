"""Per-stage timing with time.perf_counter, the live FPS estimate, and the end-of-run statistics."""
from __future__ import annotations

import statistics
import time
from collections import deque
from contextlib import contextmanager

STAGES = ("decode", "detect", "prepare", "sr", "compose", "encode")
RECENT_SAMPLES = 4096  # per stage, for the median: fixed memory however long the run


class RollingStats:
    """Count and mean over every sample, median over the most recent `RECENT_SAMPLES`: fixed memory."""

    def __init__(self, window: int = RECENT_SAMPLES):
        self.count = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.recent.append(value)

    def __len__(self) -> int:
        return self.count


class StageTimer:
    """Milliseconds per stage and frame: `with timer.stage("detect"): ...` adds to the current frame's
    total for that stage (a stage may run several times per frame); `frame_done()` closes the frame.
    Memory stays fixed however many frames run (`RollingStats`)."""

    def __init__(self, stages: tuple[str, ...] = STAGES):
        self.samples: dict[str, RollingStats] = {name: RollingStats() for name in stages}
        self._current: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        if name not in self.samples:
            raise KeyError(f"unknown stage {name!r}; stages: {', '.join(self.samples)}")
        start = time.perf_counter()
        try:
            yield
        finally:
            self._current[name] = self._current.get(name, 0.0) + (time.perf_counter() - start) * 1e3

    def frame_done(self) -> None:
        for name, total in self._current.items():
            self.samples[name].add(total)
        self._current = {}

    def add_frames(self, name: str, total_ms: float, frames: int) -> None:
        """`frames` whole frames of one stage that ran for all of them at once (a batch): an equal share each."""
        for _ in range(frames):
            self.samples[name].add(total_ms / frames)

    def merge(self, other: "StageTimer") -> None:
        """Add another timer's samples (a pipeline thread's) to this one's."""
        for name, stats in other.samples.items():
            mine = self.samples[name]
            mine.count += stats.count
            mine.total += stats.total
            mine.recent.extend(stats.recent)

    def summary(self) -> dict[str, dict]:
        """{stage: {frames, mean_ms, median_ms}} per frame, for every stage that ran (the median over the
        last RECENT_SAMPLES frames)."""
        return {name: {"frames": stats.count, "mean_ms": round(stats.total / stats.count, 3),
                       "median_ms": round(statistics.median(stats.recent), 3)}
                for name, stats in self.samples.items() if stats.count}


class FpsMeter:
    """Frames per second from the time between ticks, smoothed (EMA) for a steady on-screen number."""

    def __init__(self, alpha: float = 0.1):
        self.alpha = alpha
        self.fps: float | None = None
        self._last: float | None = None

    def tick(self) -> float | None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            instant = 1.0 / (now - self._last)
            self.fps = instant if self.fps is None else self.alpha * instant + (1 - self.alpha) * self.fps
        self._last = now
        return self.fps
