"""Several sources in one process (`--source` repeated): per-source results equal single runs, faces of all
sources share SR batches, one failing source stops alone, and per-source paths need '{source}'."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.errors import SinkError
from runtime.multi import Lane, run_sources
from runtime.pipeline import EnhanceConfig, Enhancer
from runtime.sources import ReadStatus
from tests.helpers import CPU, FakeDetector, ListSink, ListSource, det

REPO_ROOT = Path(__file__).resolve().parents[1]


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


def _frames(count, seed):
    rng = np.random.default_rng(seed)
    return [(ReadStatus.OK, rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture
def shared_backend(make_artifact):
    with create_backend("onnxruntime", load_artifact(make_artifact("m", mode="linear", batch_max=8)),
                        providers=CPU) as backend:
        yield backend


def _lane(backend, source, sink=None):
    config = EnhanceConfig(enhance_all=True, show_fps=False)
    return Lane(source, sink or ListSink(), Enhancer(backend, FakeDetector([det(40, 40, 30)]), config))


@pytest.mark.parametrize("workers", [1, 3])
def test_each_source_gets_what_a_run_of_its_own_gives_and_faces_share_batches(shared_backend, workers):
    from runtime.pipeline import run_stream

    alone = []
    for seed in (1, 2, 3):
        sink = ListSink()
        run_stream(ListSource(_frames(6, seed)), sink, _lane(shared_backend, None).enhancer)
        alone.append(sink.views)
    lanes = [_lane(shared_backend, ListSource(_frames(6, seed))) for seed in (1, 2, 3)]
    stats = run_sources(lanes, [shared_backend], gather_s=0.05, sr_workers=workers)
    for lane, views, stat in zip(lanes, alone, stats):
        assert stat.frames == 6 and stat.error is None
        assert len(lane.sink.views) == 6
        for got, want in zip(lane.sink.views, views):
            np.testing.assert_array_equal(got, want)  # same order, same pixels
    batches = stats[0].queues["sr_batches"]
    assert batches["frames"] == 18 and batches["faces"] == 18
    assert batches["batches"] < 18  # frames of different sources went through the model together


@pytest.mark.parametrize("workers", [1, 2])
def test_a_dying_camera_or_a_failing_output_stops_only_its_own_source(shared_backend, workers):
    lanes = [_lane(shared_backend, ListSource(_frames(8, 1))),
             _lane(shared_backend, DyingSource(_frames(8, 2), good=3)),
             _lane(shared_backend, ListSource(_frames(8, 3)), FailingSink())]
    healthy, dying, failing = run_sources(lanes, [shared_backend], sr_workers=workers)
    assert healthy.frames == 8 and healthy.error is None
    assert dying.frames == 3 and "camera unplugged" in dying.error
    assert failing.frames == 0 and "disk full" in failing.error


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


class Jittery:
    """A backend that takes 0-30 ms more per call, at random, and counts calls running at once."""

    def __init__(self, backend):
        import random
        import threading

        self.backend, self.random, self.lock = backend, random.Random(0), threading.Lock()
        self.running = self.most_at_once = 0

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def infer(self, feeds, check_inputs=True):
        import time

        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            delay = self.random.choice([0.0, 0.01, 0.03])
        time.sleep(delay)
        try:
            return self.backend.infer(feeds, check_inputs)
        finally:
            with self.lock:
                self.running -= 1


def test_parallel_sr_workers_keep_each_sources_order(shared_backend):
    from runtime.pipeline import run_stream

    alone = []
    for seed in (4, 5):
        sink = ListSink()
        run_stream(ListSource(_frames(10, seed)), sink, _lane(shared_backend, None).enhancer)
        alone.append(sink.views)
    jittery = Jittery(shared_backend)
    lanes = [_lane(jittery, ListSource(_frames(10, seed))) for seed in (4, 5)]
    stats = run_sources(lanes, [jittery], gather_s=0.0, sr_workers=3)
    assert jittery.most_at_once > 1  # batches really ran side by side
    for lane, views, stat in zip(lanes, alone, stats):
        assert stat.frames == 10 and stat.error is None
        for got, want in zip(lane.sink.views, views, strict=True):
            np.testing.assert_array_equal(got, want)


def test_batch_limit_caps_the_faces_per_call(shared_backend):
    """--max-batch: gathering across sources and chunking both stop at the limit (memory on a CPU)."""
    sizes = []

    class Recording(Jittery):
        def infer(self, feeds, check_inputs=True):
            sizes.append(len(next(iter(feeds.values()))))
            return self.backend.infer(feeds, check_inputs)

    shared_backend.batch_limit = 2
    recording = Recording(shared_backend)
    lanes = [_lane(recording, ListSource(_frames(4, seed))) for seed in (1, 2, 3)]
    stats = run_sources(lanes, [recording], gather_s=0.05)
    assert all(s.frames == 4 and s.error is None for s in stats)
    assert sum(sizes) == 12 and max(sizes) == 2
