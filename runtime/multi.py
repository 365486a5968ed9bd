"""Several sources (cameras, files) in one process: one model instance, faces of all sources batched together.

    reader thread per source: source.read -> Enhancer.prepare (its own tracker) --+
                                                                                   +--> shared queue --> SR thread
    ... one per source ...                                                         |    (gathers frames of every
                                                                                   |     source, one batch per model)
    finish thread per source: Enhancer.finish -> its outputs   <-- its own queue --+

The SR thread takes the oldest frame waiting, then every other frame already waiting or arriving within
`gather_s` (a small deadline, so a quiet camera is not held back), until the faces fill the largest max batch
of the models. With `sr_workers` > 1 several SR threads do this at once (frame-level parallelism on a CPU, see
`benchmarks.cpu_scaling`). Each source keeps its order (frames carry a per-source number and the finisher writes
them in that order), its own tracker, crops, events, outputs and summary; a source that fails or ends stops
alone. A backend error stops every source: the model is shared.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from .backends import Backend
from .errors import RuntimeToolkitError, SinkError
from .pipeline import Enhancer, PreparedFrame, RunStats, StopSignals, _count, enhance_frames
from .pipelined import check_sr_workers, put_until_stopped, read_and_prepare_one
from .sinks import Sink
from .sources import ReadStatus, Source
from .timing import FpsMeter, StageTimer

log = logging.getLogger(__name__)

QUEUE_DEPTH = 4  # frames per source between two stages
GATHER_S = 0.005  # how long the SR thread waits for other sources' frames to join a batch
_END = object()


@dataclass
class Lane:
    """One source with its own enhancer (tracker, crops, events) and outputs."""

    source: Source
    sink: Sink
    enhancer: Enhancer
    stats: RunStats = field(default_factory=RunStats)
    finished: queue.Queue = field(default_factory=lambda: queue.Queue(QUEUE_DEPTH))


def run_sources(lanes: list[Lane], backends: list[Backend], max_frames: int | None = None,
                stop: StopSignals | None = None, read_timeout: float = 1.0, gather_s: float = GATHER_S,
                sr_timer: StageTimer | None = None, sr_workers: int = 1) -> list[RunStats]:
    """Run every lane until its source ends (or `max_frames` frames of it are written); returns their stats.
    `sr_workers` SR threads share the model (only for backends with `concurrent_infer`)."""
    check_sr_workers(backends, sr_workers)
    stopping = threading.Event()
    prepared_q: queue.Queue = queue.Queue(QUEUE_DEPTH * len(lanes))
    sr_timer = sr_timer or StageTimer()
    sr_timers = [StageTimer() for _ in range(sr_workers)]  # one writer each, merged into sr_timer at the end
    batches = {"batches": 0, "frames": 0, "faces": 0}
    batches_lock = threading.Lock()
    errors: list[BaseException] = []
    max_faces = max(b.max_batch for b in backends)

    reader_timers = [StageTimer() for _ in lanes]  # the finish thread owns the lane's timer (one writer each)

    def put(q: queue.Queue, item) -> bool:
        return put_until_stopped(q, item, stopping)

    def read(number: int, lane: Lane) -> None:
        done = 0
        try:
            while (max_frames is None or done < max_frames) and not stopping.is_set() and lane.stats.error is None:
                prepared = read_and_prepare_one(lane.source, lane.enhancer, lane.stats, reader_timers[number],
                                                read_timeout, label=f"source {number}: ")
                if prepared is ReadStatus.EOS:
                    break
                if prepared is None:
                    continue
                if not put(prepared_q, (number, done, prepared)):
                    return
                done += 1
        except BaseException as err:  # noqa: BLE001 - this source ends; the others go on
            lane.stats.error = f"source {number}: {err}"
            log.error("%s", lane.stats.error)
        put(prepared_q, (number, done, _END))  # the end, after `done` frames

    def gather() -> list[tuple[int, object]]:
        items = [prepared_q.get(timeout=0.2)]
        faces = _face_count(items[0][2])
        deadline = time.perf_counter() + gather_s
        while faces < max_faces:
            try:
                item = prepared_q.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            items.append(item)
            faces += _face_count(item[2])
        return items

    def super_resolve(timer: StageTimer) -> None:  # until the run stops (after every finisher is done)
        try:
            while not stopping.is_set():
                try:
                    items = gather()
                except queue.Empty:
                    continue
                frames = [prepared for _, _, prepared in items if prepared is not _END]
                if frames:
                    with timer.stage("sr"):
                        faces = enhance_frames(backends, frames)
                    timer.frame_done()
                    with batches_lock:
                        batches["batches"] += 1
                        batches["frames"] += len(frames)
                        batches["faces"] += sum(len(f) for f in faces)
                    enhanced = iter(faces)
                for number, sequence, prepared in items:
                    result = _END if prepared is _END else (prepared, next(enhanced))
                    if not put(lanes[number].finished, (sequence, result)):
                        return
        except BaseException as err:  # noqa: BLE001 - the shared model failed: every source stops
            errors.append(err)
            stopping.set()

    def finish(number: int, lane: Lane) -> None:
        fps_meter, output_failed = FpsMeter(), False
        waiting, next_sequence, end = {}, 0, None  # parallel SR workers may hand frames over out of order
        while not stopping.is_set() and next_sequence != end:
            try:
                sequence, item = lane.finished.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _END:
                end = sequence  # the frame count of this source
                continue
            waiting[sequence] = item
            while next_sequence in waiting:
                prepared, faces = waiting.pop(next_sequence)
                next_sequence += 1
                if not output_failed:
                    output_failed = not write(number, lane, prepared, faces, fps_meter)

    def write(number: int, lane: Lane, prepared, faces, fps_meter: FpsMeter) -> bool:
        """Finish and write one frame; False when the output failed (the source stops, in-flight frames drain)."""
        try:
            result = lane.enhancer.finish(prepared, faces, fps_meter.fps)
            with lane.enhancer.timer.stage("encode"):
                lane.sink.write(result.view, result)
        except SinkError as err:
            lane.stats.error = f"source {number}: {err}"  # the reader stops on it
            log.error("stopping source %d after %d frames: %s", number, lane.stats.frames, err)
            return False
        lane.enhancer.timer.frame_done()
        _count(lane.stats, result)
        fps_meter.tick()
        return True

    threads = [threading.Thread(target=read, args=(n, lane), name=f"read-{n}", daemon=True)
               for n, lane in enumerate(lanes)]
    threads += [threading.Thread(target=super_resolve, args=(timer,), name=f"sr-{n}", daemon=True)
                for n, timer in enumerate(sr_timers)]
    threads += [threading.Thread(target=finish, args=(n, lane), name=f"finish-{n}", daemon=True)
                for n, lane in enumerate(lanes)]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads[-len(lanes):]):
            if stop is not None and stop.stop_requested:
                log.info("stopped by signal")
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        log.info("interrupted")
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=10.0)
    for lane, timer in zip(lanes, reader_timers):
        lane.enhancer.timer.merge(timer)
    for timer in sr_timers:
        sr_timer.merge(timer)
    if errors:
        if isinstance(errors[0], RuntimeToolkitError):
            raise errors[0]
        raise RuntimeToolkitError(f"the shared model failed, every source stopped: {errors[0]}") from errors[0]
    for lane in lanes:
        lane.stats.queues = {"sr_batches": dict(batches)}
    return [lane.stats for lane in lanes]


def _face_count(prepared) -> int:
    if prepared is _END or not isinstance(prepared, PreparedFrame):
        return 0
    return sum(r.model is not None for r in prepared.routes)
