"""Per-stage timing with time.perf_counter, the live FPS estimate, and the end-of-run statistics."""
from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

STAGES = ("decode", "detect", "prepare", "sr", "compose", "encode")


class StageTimer:
    """Milliseconds per stage and frame: `with timer.stage("detect"): ...` adds to the current frame's
    total for that stage (a stage may run several times per frame); `frame_done()` closes the frame."""

    def __init__(self, stages: tuple[str, ...] = STAGES):
        self.samples: dict[str, list[float]] = {name: [] for name in stages}
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
            self.samples[name].append(total)
        self._current = {}

    def summary(self) -> dict[str, dict]:
        """{stage: {frames, mean_ms, median_ms}} per frame, for every stage that ran."""
        return {name: {"frames": len(values), "mean_ms": round(statistics.fmean(values), 3),
                       "median_ms": round(statistics.median(values), 3)}
                for name, values in self.samples.items() if values}


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
