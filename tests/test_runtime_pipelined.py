"""The pipelined loop (`--pipelined`) gives the same frames, tracks, events and crops as the sequential one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.shared


def _run(tmp_path: Path, name: str, video: Path, model: Path, detector: Path, *extra: str) -> dict:
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


@pytest.mark.parametrize("workers", [1, 3])
def test_pipelined_run_equals_the_sequential_run(tmp_path, shared_dir, detector_path, fast_sr_artifact, workers):
    """With several SR workers frames finish out of order; they must still be written in order."""
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    sequential = _run(tmp_path, "seq", video, fast_sr_artifact, detector_path)
    pipelined = _run(tmp_path, "pipe", video, fast_sr_artifact, detector_path, "--pipelined",
                     "--sr-workers", str(workers), "--threads", "1")
    assert pipelined["sr_workers"] == workers
    for key in ("frames", "faces", "faces_enhanced", "tracks"):
        assert pipelined[key] == sequential[key], key
    assert pipelined["pipelined"] and set(pipelined["queue_depth"]) == {"prepared", "enhanced"}
    frames = sorted((tmp_path / "seq" / "frames").iterdir())
    assert len(frames) == 24
    for path in frames:  # JPEG encoding is deterministic: identical views give identical files
        assert path.read_bytes() == (tmp_path / "pipe" / "frames" / path.name).read_bytes(), path.name
    events = [(tmp_path / name / "events.jsonl").read_text().replace(str(tmp_path / name), "RUN") for name in ("seq", "pipe")]
    assert events[0] == events[1] and events[0]
    crops = sorted(p.name for p in (tmp_path / "seq" / "crops").iterdir())
    assert crops == sorted(p.name for p in (tmp_path / "pipe" / "crops").iterdir()) and crops
    for name in crops:
        a = cv2.imread(str(tmp_path / "seq" / "crops" / name))
        b = cv2.imread(str(tmp_path / "pipe" / "crops" / name))
        assert np.array_equal(a, b), name
    assert pipelined["stages_ms"]["sr"]["frames"] == 24 and pipelined["stages_ms"]["detect"]["frames"] == 24


def test_sr_workers_need_the_pipelined_loop_and_a_concurrent_backend(tmp_path, fast_sr_artifact):
    from runtime.pipelined import run_pipelined

    proc = subprocess.run([sys.executable, "-m", "runtime.enhance", "--source", str(tmp_path / "x.mp4"), "--model",
                           fast_sr_artifact, "--sr-workers", "2", "--headless"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--sr-workers 2 needs --pipelined" in proc.stderr

    class OneAtATime:
        name, concurrent_infer = "tensorrt", False

    class FakeEnhancer:
        backends = [OneAtATime()]

    from runtime.errors import RuntimeToolkitError
    with pytest.raises(RuntimeToolkitError, match="the tensorrt backend cannot run several batches at once"):
        run_pipelined(None, None, FakeEnhancer(), sr_workers=2)


def test_parallel_sr_workers_finish_out_of_order_and_frames_are_written_in_order():
    """SR takes longer for some frames than others, so with 3 workers later frames finish first."""
    import random
    import time
    from types import SimpleNamespace

    from runtime.pipeline import FrameResult
    from runtime.pipelined import run_pipelined
    from runtime.sources import ReadStatus
    from runtime.timing import StageTimer

    class Numbers:  # a source of 40 frames, each a 1x1 image holding its number
        def __init__(self):
            self.next = 0

        def read(self, timeout):
            if self.next == 40:
                return ReadStatus.EOS, None
            self.next += 1
            return ReadStatus.OK, np.full((1, 1, 3), self.next - 1, np.uint8)

    class SlowSometimes:
        backends = [SimpleNamespace(name="onnxruntime", concurrent_infer=True)]
        timer = StageTimer()
        finished_sr: list[int] = []

        def prepare(self, frame, index, timer):
            return SimpleNamespace(frame=frame, index=index)

        def enhance(self, prepared, timer):
            time.sleep(random.Random(prepared.index).choice([0.0, 0.005, 0.03]))
            self.finished_sr.append(prepared.index)
            return []

        def finish(self, prepared, faces, fps, timer):
            return FrameResult(prepared.index, prepared.frame, [], faces, 0, 0)

    class Written:
        wants_stop = wants_next_view = False
        frames: list[int] = []

        def write(self, view, result):
            self.frames.append(int(view[0, 0, 0]))

    enhancer, sink = SlowSometimes(), Written()
    stats = run_pipelined(Numbers(), sink, enhancer, sr_workers=3)
    assert sink.frames == list(range(40)) and stats.frames == 40
    assert enhancer.finished_sr != sorted(enhancer.finished_sr)  # the workers really overtook each other
