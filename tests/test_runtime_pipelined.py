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


def test_pipelined_run_equals_the_sequential_run(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    sequential = _run(tmp_path, "seq", video, fast_sr_artifact, detector_path)
    pipelined = _run(tmp_path, "pipe", video, fast_sr_artifact, detector_path, "--pipelined")
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
