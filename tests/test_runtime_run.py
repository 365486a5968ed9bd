"""The run loop (`runtime.run`): both schedules give the same frames, tracks, events and crops; several sources
share SR batches and keep their own order; a failing source or output stops alone; a window key stops or
switches the view whatever the number of sources. Thread order is forced with events, never with sleeps."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.errors import RuntimeToolkitError, SinkError
from runtime.pipeline import EnhanceConfig, Enhancer
from runtime.run import Lane, _Threaded, run_lanes
from runtime.sources import ReadStatus
from runtime.stopping import Cancelled
from runtime.timing import StageTimer
from tests.helpers import CPU, FakeDetector, ListSink, ListSource, det

REPO_ROOT = Path(__file__).resolve().parents[1]
FLAT = 200  # a frame of this one value marks the frame whose model call waits for a later frame's


def _frames(count, seed, flat_first=False):
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) for _ in range(count)]
    if flat_first:
        frames[0] = np.full_like(frames[0], FLAT)
    return [(ReadStatus.OK, frame) for frame in frames]


@pytest.fixture
def shared_backend(make_artifact):
    with create_backend("onnxruntime", load_artifact(make_artifact("m", mode="linear", batch_max=8)),
                        providers=CPU) as backend:
        yield backend


def _lane(backend, source, sink=None):
    config = EnhanceConfig(enhance_all=True, show_fps=False)
    return Lane(source, sink or ListSink(), Enhancer(backend, FakeDetector([det(40, 40, 30)]), config))


def _alone(backend, frames):
    """The views of one source run inline."""
    sink = ListSink()
    run_lanes(_lane(backend, ListSource(frames), sink))
    return sink.views


class Overtaken:
    """Wraps a backend: the call holding a flat face (the flat frame's) waits until a call that started after it
    has finished, so parallel SR workers finish frames out of order, for certain. Records the calls' order."""

    def __init__(self, backend):
        self.backend, self.changed = backend, threading.Condition()
        self.running = self.most_at_once = 0
        self.finished: list[bool] = []  # per call, in the order they finished: was it the flat one
        self.finished_numbers: list[int] = []  # the same calls, numbered in the order they started
        self.started = 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def infer(self, feeds, check_inputs=True):
        flat = bool(np.ptp(next(iter(feeds.values()))[0]) == 0)
        with self.changed:
            self.running += 1
            self.started += 1
            number = self.started
            self.most_at_once = max(self.most_at_once, self.running)
            if flat:  # wait for a later call: started after this one, and finished
                assert self.changed.wait_for(lambda: any(n > number for n in self.finished_numbers), 10), \
                    "no later call finished while the flat one waited"
        try:
            return self.backend.infer(feeds, check_inputs)
        finally:
            with self.changed:
                self.running -= 1
                self.finished.append(flat)
                self.finished_numbers.append(number)
                self.changed.notify_all()


# --- one source ------------------------------------------------------------------------------------------------
def test_parallel_sr_workers_finish_out_of_order_and_frames_are_written_in_order(shared_backend):
    frames = _frames(12, 7, flat_first=True)
    expected = _alone(shared_backend, frames)
    shared_backend.batch_limit = 1  # one frame per model call, so the flat frame is alone in its call
    overtaken = Overtaken(shared_backend)
    lane = _lane(overtaken, ListSource(frames))
    stats, = run_lanes(lane, threaded=True, sr_workers=3)
    assert overtaken.finished[0] is False  # a later frame finished first ...
    assert stats.frames == 12 and len(lane.sink.views) == 12  # ... and every frame was written in its place
    for got, want in zip(lane.sink.views, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert lane.enhancer.timer.summary()["sr"]["frames"] == 12  # SR time per frame, whatever the batches


def test_sr_workers_need_a_concurrent_backend_and_the_inline_schedule_one_worker(shared_backend, tmp_path,
                                                                                fast_sr_artifact):
    proc = subprocess.run([sys.executable, "-m", "runtime.enhance", "--source", str(tmp_path / "x.mp4"), "--model",
                           fast_sr_artifact, "--sr-workers", "2", "--headless"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sr-workers 2 needs --pipelined" in proc.stderr
    one_at_a_time = Overtaken(shared_backend)
    one_at_a_time.concurrent_infer, one_at_a_time.name = False, "tensorrt"
    with pytest.raises(RuntimeToolkitError, match="the tensorrt backend cannot run several batches at once"):
        run_lanes(_lane(one_at_a_time, ListSource([])), threaded=True, sr_workers=2)
    with pytest.raises(RuntimeToolkitError, match="inline schedule runs one source"):
        run_lanes([_lane(shared_backend, ListSource([])), _lane(shared_backend, ListSource([]))])


@pytest.mark.shared
@pytest.mark.parametrize("workers", [1, 3])
def test_threaded_run_equals_the_inline_run(tmp_path, shared_dir, detector_path, fast_sr_artifact, workers):
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    inline = _enhance(tmp_path, "inline", video, fast_sr_artifact, detector_path)
    threaded = _enhance(tmp_path, "threaded", video, fast_sr_artifact, detector_path, "--pipelined",
                        "--sr-workers", str(workers), "--threads", "1")
    assert threaded["sr_workers"] == workers and threaded["pipelined"]
    for key in ("frames", "faces", "faces_enhanced", "tracks"):
        assert threaded[key] == inline[key], key
    assert {"prepared", "enhanced", "sr_batches"} <= set(threaded["queue_depth"])
    frames = sorted((tmp_path / "inline" / "frames").iterdir())
    assert len(frames) == 24
    for path in frames:  # JPEG encoding is deterministic: identical views give identical files
        assert path.read_bytes() == (tmp_path / "threaded" / "frames" / path.name).read_bytes(), path.name
    events = [(tmp_path / name / "events.jsonl").read_text().replace(str(tmp_path / name), "RUN")
              for name in ("inline", "threaded")]
    assert events[0] == events[1] and events[0]
    crops = sorted(p.name for p in (tmp_path / "inline" / "crops").iterdir())
    assert crops == sorted(p.name for p in (tmp_path / "threaded" / "crops").iterdir()) and crops
    for name in crops:
        a = cv2.imread(str(tmp_path / "inline" / "crops" / name))
        b = cv2.imread(str(tmp_path / "threaded" / "crops" / name))
        assert np.array_equal(a, b), name
    assert threaded["stages_ms"]["sr"]["frames"] == 24 and threaded["stages_ms"]["detect"]["frames"] == 24


def _enhance(tmp_path: Path, name: str, video: Path, model: Path, detector: Path, *extra: str) -> dict:
    out = tmp_path / name
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.enhance", "--source", video, "--model", model, "--output", out / "frames",
         "--events", out / "events.jsonl", "--save-crops", out / "crops", "--max-frames", "24", "--no-fps",
         "--view", "gallery", "--detect-every", "2", "--enhance-all", "--headless", "--detector-model", detector,
         "--summary", out / "summary.json", *extra],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "summary.json").read_text())


# --- several sources -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("workers", [1, 3])
def test_each_source_gets_what_a_run_of_its_own_gives(shared_backend, workers):
    alone = [_alone(shared_backend, _frames(6, seed)) for seed in (1, 2, 3)]
    lanes = [_lane(shared_backend, ListSource(_frames(6, seed))) for seed in (1, 2, 3)]
    stats = run_lanes(lanes, threaded=True, sr_workers=workers)
    for lane, views, stat in zip(lanes, alone, stats):
        assert stat.frames == 6 and stat.error is None
        for got, want in zip(lane.sink.views, views, strict=True):
            np.testing.assert_array_equal(got, want)  # same order, same pixels
    assert stats[0].queues["sr_batches"]["frames"] == 18 and stats[0].queues["sr_batches"]["faces"] == 18


def test_an_sr_worker_gathers_the_waiting_frames_of_every_source_into_one_batch(shared_backend):
    lanes = [_lane(shared_backend, ListSource([])) for _ in range(3)]
    threaded = _Threaded(lanes, [shared_backend], None, 1.0, gather_s=0.0, sr_workers=1, depth=4,
                         sr_timer=StageTimer())
    prepared = [lane.enhancer.prepare(frame, 0) for lane, (_, frame) in zip(lanes, _frames(3, 1))]
    for number, frame in enumerate(prepared):
        threaded.prepared.put((number, 0, frame))
    assert [number for number, _, _ in threaded._gather()] == [0, 1, 2]  # one model call for three sources
    shared_backend.batch_limit = 2
    threaded = _Threaded(lanes, [shared_backend], None, 1.0, 0.0, 1, 4, StageTimer())
    for number, frame in enumerate(prepared):
        threaded.prepared.put((number, 0, frame))
    assert len(threaded._gather()) == 2  # --max-batch caps the gathering


def test_parallel_sr_workers_keep_each_sources_order(shared_backend):
    alone = [_alone(shared_backend, _frames(10, seed, flat_first=seed == 4)) for seed in (4, 5)]
    shared_backend.batch_limit = 1
    overtaken = Overtaken(shared_backend)
    lanes = [_lane(overtaken, ListSource(_frames(10, seed, flat_first=seed == 4))) for seed in (4, 5)]
    stats = run_lanes(lanes, threaded=True, sr_workers=3)
    assert overtaken.most_at_once > 1 and overtaken.finished[0] is False  # calls ran side by side, out of order
    for lane, views, stat in zip(lanes, alone, stats):
        assert stat.frames == 10 and stat.error is None
        for got, want in zip(lane.sink.views, views, strict=True):
            np.testing.assert_array_equal(got, want)


def test_batch_limit_caps_the_faces_per_call(shared_backend):
    """--max-batch: gathering across sources and chunking both stop at the limit (memory on a CPU)."""
    sizes = []

    class Recording(Overtaken):
        def infer(self, feeds, check_inputs=True):
            sizes.append(len(next(iter(feeds.values()))))
            return self.backend.infer(feeds, check_inputs)

    shared_backend.batch_limit = 2
    recording = Recording(shared_backend)
    lanes = [_lane(recording, ListSource(_frames(4, seed))) for seed in (1, 2, 3)]
    stats = run_lanes(lanes, threaded=True, gather_s=0.05)
    assert all(s.frames == 4 and s.error is None for s in stats)
    assert sum(sizes) == 12 and max(sizes) <= 2  # that gathering does fill a batch: the _gather test above


class DyingSource(ListSource):
    """Gives `good` frames, then fails the way a lost camera's driver can (an exception, not a status)."""

    def __init__(self, items, good: int):
        super().__init__(items)
        self.good = good

    def read(self, timeout=None):
        if self.good == 0:
            raise OSError("camera unplugged")
        self.good -= 1
        return super().read(timeout)


class FailingSink(ListSink):
    def write(self, view, result=None):
        raise SinkError("disk full")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dying_camera_or_a_failing_output_stops_only_its_own_source(shared_backend, workers):
    lanes = [_lane(shared_backend, ListSource(_frames(8, 1))),
             _lane(shared_backend, DyingSource(_frames(8, 2), good=3)),
             _lane(shared_backend, ListSource(_frames(8, 3)), FailingSink())]
    healthy, dying, failing = run_lanes(lanes, threaded=True, sr_workers=workers)
    assert healthy.frames == 8 and healthy.error is None
    assert dying.frames == 3 and "camera unplugged" in dying.error
    assert failing.frames == 0 and "disk full" in failing.error


class KeySink(ListSink):
    """A window whose user presses a key after the first frame: 'q' (stop) or 'v' (next view)."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    @property
    def wants_stop(self):
        return self.key == "q" and len(self.views) >= 1

    @property
    def wants_next_view(self):
        return self.key == "v" and len(self.views) == 1


@pytest.mark.parametrize("sources", [1, 3])
def test_the_window_stop_key_ends_the_run_with_one_source_or_many(shared_backend, sources):
    lanes = [_lane(shared_backend, ListSource(_frames(6, 1)), KeySink("q"))]
    lanes += [_lane(shared_backend, ListSource(_frames(100, seed))) for seed in range(2, sources + 1)]
    stats = run_lanes(lanes, threaded=sources > 1)
    assert stats[0].frames == 1
    # the others stop too: at most what the bounded queues held when the key came
    assert all(s.frames < 100 for s in stats[1:])


@pytest.mark.parametrize("sources", [1, 3])
def test_the_window_view_key_switches_its_own_sources_view(shared_backend, sources):
    lanes = [_lane(shared_backend, ListSource(_frames(3, 1)), KeySink("v"))]
    lanes += [_lane(shared_backend, ListSource(_frames(3, seed))) for seed in range(2, sources + 1)]
    run_lanes(lanes, threaded=sources > 1)
    assert lanes[0].enhancer.config.view == "gallery"
    assert all(lane.enhancer.config.view == "overlay" for lane in lanes[1:])


@pytest.mark.parametrize("threaded", [False, True])
def test_a_cancelled_model_call_ends_the_run_without_an_error(shared_backend, threaded):
    """A stop signal while a remote model answers (runtime.stopping.Cancelled): a stop, not a failure."""
    class Cancelling(Overtaken):
        def infer(self, feeds, check_inputs=True):
            raise Cancelled("stop requested while waiting for the model")

    lanes = [_lane(Cancelling(shared_backend), ListSource(_frames(4, 1)))]
    stats = run_lanes(lanes, threaded=threaded)
    assert stats[0].frames == 0 and stats[0].error is None


def test_several_sources_need_source_in_each_output_path(tmp_path, fast_sr_artifact):
    proc = subprocess.run(
        [sys.executable, "-m", "runtime.enhance", "--source", "a.mp4", "--source", "b.mp4", "--model",
         fast_sr_artifact, "--output", tmp_path / "out.mp4", "--headless"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "with 2 sources each needs '{source}'" in proc.stderr and "out_{source}.mp4" in proc.stderr


@pytest.mark.shared
@pytest.mark.parametrize("workers", [1, 2])
def test_two_cameras_in_one_process_equal_two_single_runs(tmp_path, shared_dir, detector_path, fast_sr_artifact,
                                                          workers):
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    common = ["--model", fast_sr_artifact, "--max-frames", "12", "--no-fps", "--detect-every", "2",
              "--enhance-all", "--headless", "--detector-model", detector_path]

    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "runtime.enhance", *map(str, args), *map(str, common)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout[proc.stdout.index("{"):])

    single = run("--source", video, "--output", tmp_path / "single", "--events", tmp_path / "single.jsonl")
    both = run("--source", video, "--source", video, "--output", tmp_path / "multi_{source}",
               "--events", tmp_path / "multi_{source}.jsonl", "--sr-workers", workers)
    assert both["sr_workers"] == workers
    assert [s["frames"] for s in both["sources"]] == [12, 12] and both["frames"] == 24
    assert both["faces"] == 2 * single["faces"] and both["error"] is None
    expected = sorted(p.name for p in (tmp_path / "single").iterdir())
    for number in (0, 1):
        folder = tmp_path / f"multi_{number}"
        assert sorted(p.name for p in folder.iterdir()) == expected
        for name in expected:
            assert (folder / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name
        events = (tmp_path / f"multi_{number}.jsonl").read_text()
        assert events == (tmp_path / "single.jsonl").read_text() and events
    assert both["sr_batches"]["frames"] == 24
