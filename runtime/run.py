"""The run loop: sources through the enhancer into their outputs, in one of two schedules.

A `Lane` is one source with its outputs, its enhancer (tracker, crops, events), stats and progress. Every
frame goes the same way: read -> `Enhancer.prepare` -> SR -> `FrameWriter.write` (compose, record, output,
count, window keys). The schedules only differ in which thread does which step:

    inline:    the caller's thread does every step, one frame at a time (the CLI's default, `FaceSR.stream`).
    threaded:  reader thread per lane:  read -> prepare  --+
                                                            +--> SR workers (faces of every lane's waiting
               ... one per lane ...                         |    frames batched per model) --+
                                                            |                                |
               the caller's thread: FrameWriter, each lane's frames in their order  <--------+

Threaded runs overlap decoding, the network and encoding (`--pipelined` is one lane of it; several
`--source`s always run threaded). Frames carry a per-lane sequence number, and `InOrder` writes them in that
order whatever order parallel SR workers finish them in, so a file gives the same frames, tracks, events and
crops in both schedules. Full queues block the stage before them (back-pressure): files never drop a frame, a
live source keeps only its newest frame meanwhile. The writer runs on the caller's thread so a window's keys
(q/Esc stop the run, v switches the view) work the same with one source or many.
"""
from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .backends import Backend
from .errors import RuntimeToolkitError, SinkError, SourceError
from .outputs import Sink
from .pipeline import Enhancer, FrameResult, PreparedFrame, enhance_frames
from .progress import Progress
from .routing import CAMERA_GRADE, FUSED_GRADE, KEPT
from .sources import ReadStatus, Source
from .stopping import STOP_REQUESTED, Cancelled
from .timing import FpsMeter, StageTimer

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4  # frames per lane between two stages
GATHER_S = 0.005  # how long an SR worker waits for other lanes' frames to join a batch
LATENCY_SAMPLES = 4096  # the latest frames' capture-to-output latencies kept for the percentiles
_END = object()  # a lane's last item


@dataclass
class RunStats:
    frames_read: int = 0
    frames: int = 0
    faces: int = 0
    enhanced: int = 0
    skipped_tiny: int = 0
    over_limit: int = 0
    bad_frames: int = 0
    read_errors: int = 0
    timeouts: int = 0
    kept: Counter = field(default_factory=Counter)  # faces kept as recorded, by routing.KEPT kind
    camera_grade: int = 0  # faces the camera-grade twin enhanced (routing.Twins)
    fused_grade: int = 0  # faces the fused-grade twin enhanced
    track_ids: set = field(default_factory=set)
    error: str | None = None  # why this lane stopped early (an output or its source failed)
    queues: dict = field(default_factory=dict)  # threaded runs: queue depths and SR batch sizes
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))  # seconds, capture -> output

    def count(self, result: FrameResult) -> None:
        """Add one written frame."""
        self.frames += 1
        self.faces += len(result.faces)
        self.enhanced += sum(face.sr is not None for face in result.faces)
        self.camera_grade += sum(face.sr is not None and face.route == CAMERA_GRADE for face in result.faces)
        self.fused_grade += sum(face.sr is not None and face.route == FUSED_GRADE for face in result.faces)
        non_finite = sum(face.kept == "non_finite" for face in result.faces)
        if non_finite and not self.kept["non_finite"]:
            log.warning("the model's output for %d face(s) of frame %d was not finite (NaN/Inf): those faces keep "
                        "their recorded pixels; the weights or the engine are broken (re-export and check the "
                        "export's parity). The summary counts them as faces_not_finite.", non_finite, result.index)
        self.kept.update(face.kept for face in result.faces if face.sr is None and face.kept)
        self.skipped_tiny += result.skipped_tiny
        self.over_limit += result.over_limit
        self.track_ids.update(face.track_id for face in result.faces)
        if result.captured_at is not None:
            self.latencies.append(time.perf_counter() - result.captured_at)


@dataclass
class Lane:
    """One source with its own enhancer (tracker, crops, events), outputs, stats and progress line."""

    source: Source
    sink: Sink
    enhancer: Enhancer
    stats: RunStats = field(default_factory=RunStats)
    progress: Progress | None = None
    label: str = ""  # "source N: " in log lines when there are several
    fps_meter: FpsMeter = field(default_factory=FpsMeter)


class StopSignals:
    """SIGINT, SIGTERM (systemd, Docker, Kubernetes) and SIGHUP: the first asks the run to stop after the
    current frame, so every output is closed properly; a second one exits at once. `exit_code` is the
    shell convention 128 + signal number (130, 143, 129), or None when no signal came."""

    SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def install(self) -> "StopSignals":
        import signal

        STOP_REQUESTED.clear()
        for name in self.SIGNALS:
            number = getattr(signal, name, None)
            if number is not None:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def restore(self) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, signum, frame) -> None:
        import os

        if self.received is not None:
            log.error("second stop signal: exiting at once (outputs may be incomplete)")
            os._exit(128 + signum)
        self.received = signum
        STOP_REQUESTED.set()  # a remote model call that waits gives up now (runtime.stopping)
        log.warning("stop signal %d: finishing the current frame and closing the outputs", signum)

    @property
    def stop_requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int | None:
        return None if self.received is None else 128 + self.received


# --- the steps every schedule shares --------------------------------------------------------------


def read_and_prepare(lane: Lane, timer: StageTimer, read_timeout: float):
    """One frame of the lane's source, detected and prepared on `timer`: the PreparedFrame; None when there is
    nothing to pass on (a timeout, a read error or a bad frame, counted in the stats); ReadStatus.EOS at the end.
    Waiting for the frame counts towards its decode time."""
    stats = lane.stats
    with timer.stage("decode"):
        status, frame = lane.source.read(read_timeout)
    if status is ReadStatus.EOS:
        return ReadStatus.EOS
    if status is not ReadStatus.OK:
        stats.timeouts += status is ReadStatus.TIMEOUT
        stats.read_errors += status is ReadStatus.ERROR
        return None
    stats.frames_read += 1
    try:
        return lane.enhancer.prepare(frame, stats.frames_read - 1, timer)
    except SourceError as err:
        log.warning("%sframe skipped: %s", lane.label, err)
        stats.bad_frames += 1
        return None


class FrameWriter:
    """Finishes frames on the caller's thread: compose and record (`Enhancer.finish`), write to the lane's
    outputs, count, and read the window's keys. `stopped` turns True when a window asked to stop (q/Esc):
    that stops the whole run. A failing output stops its own lane (`RunStats.error`)."""

    def __init__(self, lanes: list[Lane]):
        self.lanes = lanes
        self.stopped = False
        self.failed: set[int] = set()  # lanes whose output failed: their in-flight frames drain unwritten

    def write(self, number: int, prepared: PreparedFrame, faces) -> FrameResult | None:
        """One frame of lane `number`; None when its output failed."""
        lane = self.lanes[number]
        timer = lane.enhancer.timer
        try:
            result = lane.enhancer.finish(prepared, faces, lane.fps_meter.fps)
            with timer.stage("encode"):
                lane.sink.write(result.view, result)
        except SinkError as err:
            lane.stats.error = f"{lane.label}{err}"  # its reader stops on it
            self.failed.add(number)
            log.error("%sstopping after %d frames: %s", lane.label, lane.stats.frames, err)
            return None
        timer.frame_done()
        lane.stats.count(result)
        lane.fps_meter.tick()
        if lane.progress is not None:
            lane.progress.update(lane.stats.frames, lane.stats.faces, lane.fps_meter.fps,
                                 lane.source.frames_dropped, getattr(lane.source, "reconnects", 0))
        self._read_keys(lane)
        return result

    def _read_keys(self, lane: Lane) -> None:
        if lane.sink.wants_stop:
            log.info("stopped from the window")
            self.stopped = True
        elif lane.sink.wants_next_view:
            lane.enhancer.next_view()


class InOrder:
    """Items numbered 0, 1, 2, ... that arrive in any order, released in their order."""

    def __init__(self):
        self.waiting: dict[int, object] = {}
        self.next = 0

    def add(self, number: int, item) -> list:
        self.waiting[number] = item
        ready = []
        while self.next in self.waiting:
            ready.append(self.waiting.pop(self.next))
            self.next += 1
        return ready


# --- inline ---------------------------------------------------------------------------------------


def frames_inline(lane: Lane, max_frames: int | None = None, stop: StopSignals | None = None,
                  read_timeout: float = 1.0) -> Iterator[FrameResult]:
    """The inline schedule as a generator: each written frame's result, until the source ends, `max_frames`
    frames are written, a stop signal, or the window or a failing output stops it."""
    writer, timer = FrameWriter([lane]), lane.enhancer.timer
    while max_frames is None or lane.stats.frames < max_frames:
        if stop is not None and stop.stop_requested:
            log.info("stopped by signal after %d frames", lane.stats.frames)
            return
        prepared = read_and_prepare(lane, timer, read_timeout)
        if prepared is ReadStatus.EOS:
            return
        if prepared is None:
            continue
        result = writer.write(0, prepared, lane.enhancer.enhance(prepared))
        if result is None:
            return
        yield result
        if writer.stopped:
            return


# --- threaded -------------------------------------------------------------------------------------


class _Threaded:
    """The threaded schedule's threads and queues (see the module docstring)."""

    def __init__(self, lanes: list[Lane], backends: list[Backend], max_frames: int | None, read_timeout: float,
                 gather_s: float, sr_workers: int, depth: int, sr_timer: StageTimer):
        self.lanes, self.backends, self.max_frames, self.sr_timer = lanes, backends, max_frames, sr_timer
        self.read_timeout, self.gather_s = read_timeout, gather_s
        self.stopping = threading.Event()
        self.prepared = queue.Queue(depth * len(lanes))  # (lane, sequence, PreparedFrame | _END)
        self.enhanced = queue.Queue(depth * len(lanes))  # (lane, sequence, (PreparedFrame, faces) | _END)
        self.reader_timers = [StageTimer() for _ in lanes]  # one writer per timer, merged at the end
        self.sr_timers = [StageTimer() for _ in range(sr_workers)]
        self.max_faces = max(b.max_batch for b in backends)
        self.batches, self.batches_lock = Counter(), threading.Lock()
        self.depths = {"prepared": _DepthStats(), "enhanced": _DepthStats()}
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._read, args=(n,), name=f"read-{n}", daemon=True)
                        for n in range(len(lanes))]
        self.threads += [threading.Thread(target=self._super_resolve, args=(timer,), name=f"sr-{n}", daemon=True)
                         for n, timer in enumerate(self.sr_timers)]

    def _put(self, q: queue.Queue, item) -> bool:
        """Blocking put that gives up when the run is stopping; False then."""
        while not self.stopping.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, number: int) -> None:
        lane, done = self.lanes[number], 0
        try:
            while ((self.max_frames is None or done < self.max_frames) and not self.stopping.is_set()
                   and lane.stats.error is None):
                prepared = read_and_prepare(lane, self.reader_timers[number], self.read_timeout)
                if prepared is ReadStatus.EOS:
                    break
                if prepared is None:
                    continue
                self.reader_timers[number].frame_done()
                if not self._put(self.prepared, (number, done, prepared)):
                    return
                done += 1
        except Exception as err:  # noqa: BLE001 - a source that fails ends its own lane; the others go on
            lane.stats.error = f"{lane.label}{err}"
            log.error("%s", lane.stats.error)
        self._put(self.prepared, (number, done, _END))  # the end, after `done` frames

    def _gather(self) -> list[tuple]:
        """The oldest waiting frame, then frames that wait or arrive within `gather_s`, until the faces fill
        the largest batch of the models."""
        items = [self.prepared.get(timeout=0.2)]
        faces = _routed_faces(items[0][2])
        deadline = time.perf_counter() + self.gather_s
        while faces < self.max_faces:
            try:
                item = self.prepared.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            items.append(item)
            faces += _routed_faces(item[2])
        return items

    def _super_resolve(self, timer: StageTimer) -> None:
        try:
            while not self.stopping.is_set():
                try:
                    items = self._gather()
                except queue.Empty:
                    continue
                frames = [prepared for _, _, prepared in items if prepared is not _END]
                if frames:
                    start = time.perf_counter()
                    enhanced = iter(enhance_frames(self.backends, frames))
                    timer.add_frames("sr", (time.perf_counter() - start) * 1e3, len(frames))  # a share each
                    with self.batches_lock:
                        self.batches.update(batches=1, frames=len(frames), faces=sum(len(f.jobs) for f in frames))
                for number, sequence, prepared in items:
                    done = _END if prepared is _END else (prepared, next(enhanced))
                    if not self._put(self.enhanced, (number, sequence, done)):
                        return
        except Cancelled as err:  # a stop signal came while a remote model was still answering
            log.info("stopped: %s", err)
            self.stopping.set()
        except BaseException as err:  # noqa: BLE001 - the shared model failed: every lane stops
            self.errors.append(err)
            self.stopping.set()

    def run(self, stop: StopSignals | None) -> None:
        for thread in self.threads:
            thread.start()
        try:
            self._write(stop)
        finally:
            self.stopping.set()
            for thread in self.threads:
                thread.join(timeout=10.0)
        self._merge_stats()
        if self.errors:
            err = self.errors[0]
            if isinstance(err, RuntimeToolkitError):
                raise err
            raise RuntimeToolkitError(f"the model failed, every source stopped: {err}") from err

    def _write(self, stop: StopSignals | None) -> None:
        """The caller's thread: each lane's frames in order, until every lane has ended or the run stops."""
        writer = FrameWriter(self.lanes)
        in_order = [InOrder() for _ in self.lanes]
        open_lanes = set(range(len(self.lanes)))
        while open_lanes and not self.stopping.is_set():
            if stop is not None and stop.stop_requested:
                log.info("stopped by signal after %d frames", sum(lane.stats.frames for lane in self.lanes))
                return
            try:
                number, sequence, item = self.enhanced.get(timeout=0.2)
            except queue.Empty:
                continue
            self.depths["prepared"].sample(self.prepared.qsize())
            self.depths["enhanced"].sample(self.enhanced.qsize())
            for ready in in_order[number].add(sequence, item):
                if ready is _END:
                    open_lanes.discard(number)
                elif number not in writer.failed:
                    writer.write(number, *ready)
                if writer.stopped:
                    return

    def _merge_stats(self) -> None:
        for lane, timer in zip(self.lanes, self.reader_timers):
            lane.enhancer.timer.merge(timer)
        for timer in self.sr_timers:
            self.sr_timer.merge(timer)
        queues = {"sr_batches": {key: self.batches[key] for key in ("batches", "frames", "faces")},
                  **{name: depth.summary() for name, depth in self.depths.items()}}
        for lane in self.lanes:
            lane.stats.queues = queues


class _DepthStats:
    def __init__(self):
        self.samples = self.total = self.max = 0

    def sample(self, depth: int) -> None:
        self.samples += 1
        self.total += depth
        self.max = max(self.max, depth)

    def summary(self) -> dict:
        return {"max": self.max, "mean": round(self.total / self.samples, 2) if self.samples else 0.0}


def _routed_faces(prepared) -> int:
    if prepared is _END:
        return 0
    return sum(r.model is not None for r in prepared.routes)


def check_sr_workers(backends, sr_workers: int) -> None:
    """Several SR threads need backends whose `infer` may run in several threads at once."""
    if sr_workers < 1:
        raise ValueError(f"sr_workers must be >= 1, got {sr_workers}")
    unsafe = [b.name for b in backends if not b.concurrent_infer]
    if sr_workers > 1 and unsafe:
        raise RuntimeToolkitError(f"--sr-workers {sr_workers}: the {unsafe[0]} backend cannot run several batches "
                                  "at once; use --sr-workers 1 (or the onnxruntime backend)")


# --- entry point ----------------------------------------------------------------------------------


def run_lanes(lanes: Lane | list[Lane], *, threaded: bool = False, max_frames: int | None = None,
        stop: StopSignals | None = None, read_timeout: float = 1.0, sr_workers: int = 1,
        gather_s: float = GATHER_S, depth: int = QUEUE_DEPTH, sr_timer: StageTimer | None = None) -> list[RunStats]:
    """Run every lane until its source ends or `max_frames` of its frames are written; returns their stats.

    `threaded=False` (inline) takes one lane. Threaded: `sr_workers` SR threads share the models (only for
    backends with `concurrent_infer`); their time per frame goes to `sr_timer` (default: the lane's timer when
    there is one lane). A failing output or source ends its own lane (`RunStats.error`); a
    model error ends every lane and is raised; a stop signal, Ctrl-C or the window's stop key end the run
    with every output closed properly by the caller.
    """
    lanes = [lanes] if isinstance(lanes, Lane) else list(lanes)
    backends = lanes[0].enhancer.backends
    check_sr_workers(backends, sr_workers)
    if not threaded and (len(lanes) != 1 or sr_workers != 1):
        raise RuntimeToolkitError("the inline schedule runs one source with one SR worker; use threaded=True")
    try:
        if threaded:
            if sr_timer is None:
                sr_timer = lanes[0].enhancer.timer if len(lanes) == 1 else StageTimer()
            _Threaded(lanes, backends, max_frames, read_timeout, gather_s, sr_workers, depth, sr_timer).run(stop)
        else:
            for _ in frames_inline(lanes[0], max_frames, stop, read_timeout):
                pass
    except KeyboardInterrupt:
        log.info("interrupted after %d frames", sum(lane.stats.frames for lane in lanes))
    except Cancelled as err:  # a stop signal came while a remote model was still answering
        log.info("stopped after %d frames: %s", sum(lane.stats.frames for lane in lanes), err)
    finally:
        for lane in lanes:
            if lane.progress is not None:
                lane.progress.close()
    return [lane.stats for lane in lanes]


# --- summary --------------------------------------------------------------------------------------


def peak_rss_mb() -> float | None:
    """This process's peak resident memory (Linux/macOS), None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def latency_summary(latencies) -> dict | None:
    """p50/p95 of the capture-to-output latency in ms (the latest LATENCY_SAMPLES frames)."""
    if not latencies:
        return None
    p50, p95 = np.percentile(np.asarray(latencies) * 1000, [50, 95])
    return {"p50": round(float(p50), 1), "p95": round(float(p95), 1), "frames": len(latencies)}


def summarize(stats: RunStats, timer: StageTimer, wall_s: float, extra: dict | None = None) -> dict:
    """The JSON summary printed (and optionally written) at the end of a run."""
    return {
        **(extra or {}),
        "frames": stats.frames,
        "faces": stats.faces,
        "faces_enhanced": stats.enhanced,
        "faces_enhanced_camera_grade": stats.camera_grade,
        "faces_enhanced_fused_grade": stats.fused_grade,
        "faces_not_finite": stats.kept["non_finite"],
        "faces_kept": {KEPT[kind][0]: n for kind, n in stats.kept.most_common()},
        "to_enhance_kept_faces": {KEPT[kind][0]: KEPT[kind][1] for kind, _ in stats.kept.most_common()},
        "tracks": len(stats.track_ids),
        "skipped_tiny_faces": stats.skipped_tiny,
        "over_max_faces": stats.over_limit,
        "bad_frames": stats.bad_frames,
        "read_errors": stats.read_errors,
        "read_timeouts": stats.timeouts,
        "wall_s": round(wall_s, 3),
        "fps": round(stats.frames / wall_s, 3) if wall_s > 0 else None,
        "stages_ms": timer.summary(),
        "latency_ms": latency_summary(stats.latencies),
        "peak_rss_mb": peak_rss_mb(),
        **({"queue_depth": stats.queues} if stats.queues else {}),
        "error": stats.error,
    }
