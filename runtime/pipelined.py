"""The pipelined loop: capture + detection/preparation, SR, and compose + outputs on three threads joined by
bounded queues, so the network does not wait for the decoder and the encoder does not wait for the network.

    reader thread: source.read -> Enhancer.prepare  --q1-->  SR thread: Enhancer.enhance  --q2-->  caller's
    thread: Enhancer.finish -> sink.write

Each stage runs on one thread and the queues are FIFO, so frames keep their order and each piece of state has
one owner (the tracker: the reader; crops, events and outputs: the caller's thread): a file gives the same frames,
tracks and crops as `pipeline.run_stream`. With `sr_workers` > 1 several SR threads take frames from the same
queue (frame-level parallelism: on a CPU, two 1-thread ONNX Runtime runs at once beat one 2-thread run, see
`benchmarks.cpu_scaling`); frames carry a sequence number and the caller's thread writes them in that order.
Full queues block the stage before them (back-pressure): files never drop a frame; a live source keeps only its
newest frame meanwhile (counted in `frames_dropped`). OpenCV and ONNX Runtime release the GIL in their heavy
calls, which is what lets the threads overlap.
"""
from __future__ import annotations

import logging
import queue
import threading

from .errors import RuntimeToolkitError, SinkError, SourceError
from .stopping import Cancelled
from .pipeline import Enhancer, RunStats, StopSignals, read_frame, write_result
from .progress import Progress
from .sinks import Sink
from .sources import ReadStatus, Source
from .timing import FpsMeter, StageTimer

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4  # frames between two stages
_END = object()  # no more frames


class _QueueStats:
    def __init__(self):
        self.samples = self.total = self.max = 0

    def sample(self, depth: int) -> None:
        self.samples += 1
        self.total += depth
        self.max = max(self.max, depth)

    def summary(self) -> dict:
        return {"max": self.max, "mean": round(self.total / self.samples, 2) if self.samples else 0.0}


def put_until_stopped(outbox: queue.Queue, item, stopping: threading.Event) -> bool:
    """Blocking put that gives up when the run is stopping; False then."""
    while not stopping.is_set():
        try:
            outbox.put(item, timeout=0.2)
            return True
        except queue.Full:
            continue
    return False


def read_and_prepare_one(source: Source, enhancer: Enhancer, stats: RunStats, timer: StageTimer,
                         read_timeout: float, label: str = ""):
    """Read one frame and prepare it on `timer` (one frame of it): the PreparedFrame; None when there was
    nothing to pass on (a timeout, a read error or a bad frame, counted in `stats`); ReadStatus.EOS at the end."""
    frame = read_frame(source, stats, timer, read_timeout)
    if frame is ReadStatus.EOS or frame is None:
        return frame
    try:
        return enhancer.prepare(frame, stats.frames_read - 1, timer)
    except SourceError as err:
        log.warning("%sframe skipped: %s", label, err)
        stats.bad_frames += 1
        return None
    finally:
        timer.frame_done()


def check_sr_workers(backends, sr_workers: int) -> None:
    """Several SR threads need backends whose `infer` may run in several threads at once."""
    if sr_workers < 1:
        raise ValueError(f"sr_workers must be >= 1, got {sr_workers}")
    unsafe = [b.name for b in backends if not b.concurrent_infer]
    if sr_workers > 1 and unsafe:
        raise RuntimeToolkitError(f"--sr-workers {sr_workers}: the {unsafe[0]} backend cannot run several batches "
                                  "at once; use --sr-workers 1 (or the onnxruntime backend)")


class _Stage(threading.Thread):
    """A thread that turns items of `inbox` into items of `outbox` until _END; an exception is passed on."""

    def __init__(self, name: str, work, inbox: queue.Queue | None, outbox: queue.Queue, stopping: threading.Event):
        super().__init__(name=name, daemon=True)
        self.work, self.inbox, self.outbox, self.stopping = work, inbox, outbox, stopping

    def put(self, item) -> bool:
        return put_until_stopped(self.outbox, item, self.stopping)

    def run(self) -> None:
        try:
            self.work(self)
        except BaseException as err:  # noqa: BLE001 - handed to the caller's thread, which re-raises it
            self.put(err)
        finally:
            self.put(_END)


def run_pipelined(source: Source, sink: Sink, enhancer: Enhancer, max_frames: int | None = None,
                  read_timeout: float = 1.0, stop: StopSignals | None = None, progress: Progress | None = None,
                  depth: int = QUEUE_DEPTH, sr_workers: int = 1) -> RunStats:
    """Same contract as `pipeline.run_stream` (stats, stop signals, a failing output ends the run).
    `sr_workers` SR threads call the models at once: only for backends safe for that (`concurrent_infer`)."""
    check_sr_workers(enhancer.backends, sr_workers)
    stats, fps_meter, stopping = RunStats(), FpsMeter(), threading.Event()
    prepared_q, enhanced_q = queue.Queue(depth), queue.Queue(depth)
    reader_timer, sr_timers = StageTimer(), [StageTimer() for _ in range(sr_workers)]
    depths = {"prepared": _QueueStats(), "enhanced": _QueueStats()}

    def read_and_prepare(stage: _Stage) -> None:
        read = 0
        while (max_frames is None or read < max_frames) and not stopping.is_set():
            item = read_and_prepare_one(source, enhancer, stats, reader_timer, read_timeout)
            if item is ReadStatus.EOS:
                return
            if item is None:
                continue
            if not stage.put((read, item)):  # the sequence number restores the order after parallel SR
                return
            read += 1

    def super_resolve(stage: _Stage, timer: StageTimer) -> None:
        while not stopping.is_set():
            try:
                item = stage.inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                put_until_stopped(stage.inbox, _END, stopping)  # the other SR workers must see the end too
                return  # _Stage passes _END on
            if isinstance(item, BaseException):
                stage.put(item)
                return
            number, prepared = item
            faces = enhancer.enhance(prepared, timer)
            timer.frame_done()
            if not stage.put((number, prepared, faces)):
                return

    stages = [_Stage("prepare", read_and_prepare, None, prepared_q, stopping)]
    stages += [_Stage(f"sr-{n}", lambda stage, timer=timer: super_resolve(stage, timer), prepared_q, enhanced_q,
                      stopping) for n, timer in enumerate(sr_timers)]
    for stage in stages:
        stage.start()
    try:
        _finish_frames(enhanced_q, sink, enhancer, stats, fps_meter, stop, progress, depths, prepared_q, sr_workers)
    except SinkError as err:  # an output failed: stop, keep what was written, say so in the summary
        stats.error = str(err)
        log.error("stopping after %d frames: %s", stats.frames, err)
    except KeyboardInterrupt:
        log.info("interrupted after %d frames", stats.frames)
    except Cancelled as err:  # a stop signal came while a remote model was still answering
        log.info("stopped after %d frames: %s", stats.frames, err)
    finally:
        stopping.set()
        for stage in stages:
            stage.join(timeout=10.0)
        if progress is not None:
            progress.close()
    for timer in (reader_timer, *sr_timers):
        enhancer.timer.merge(timer)
    stats.queues = {name: q.summary() for name, q in depths.items()}
    return stats


def _finish_frames(enhanced_q: queue.Queue, sink: Sink, enhancer: Enhancer, stats: RunStats, fps_meter: FpsMeter,
                   stop: StopSignals | None, progress: Progress | None, depths: dict, prepared_q: queue.Queue,
                   sr_workers: int = 1) -> None:
    """The caller's thread: compose, record and write each frame in order, until every SR worker has ended
    or a stop. Frames that parallel SR workers finish early wait in `waiting` for their turn."""
    waiting, next_number, ended = {}, 0, 0
    while ended < sr_workers:
        if stop is not None and stop.stop_requested:
            log.info("stopped by signal after %d frames", stats.frames)
            return
        item = enhanced_q.get()
        if item is _END:
            ended += 1
            continue
        if isinstance(item, BaseException):
            raise item
        depths["prepared"].sample(prepared_q.qsize())
        depths["enhanced"].sample(enhanced_q.qsize())
        number, prepared, faces = item
        waiting[number] = (prepared, faces)
        while next_number in waiting:
            if not _write_frame(*waiting.pop(next_number), sink, enhancer, stats, fps_meter, progress):
                return
            next_number += 1


def _write_frame(prepared, faces, sink: Sink, enhancer: Enhancer, stats: RunStats, fps_meter: FpsMeter,
                 progress: Progress | None) -> bool:
    """Compose, record and write one frame; False when the window asked to stop."""
    result = enhancer.finish(prepared, faces, fps_meter.fps, enhancer.timer)
    go_on = write_result(result, sink, enhancer, stats, fps_meter)
    if progress is not None:
        progress.update(stats.frames, stats.faces, fps_meter.fps)
    return go_on
