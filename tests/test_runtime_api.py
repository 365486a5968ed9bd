"""The Python API (`runtime.FaceSR`): the README example runs verbatim, and the API's promises hold."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import make_sr_artifact

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.shared


def _readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text[text.index("From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs_verbatim(tmp_path, shared_dir):
    """In a folder laid out as the README assumes: artifacts/ there, ../shared beside it."""
    workdir = tmp_path / "repo"
    make_sr_artifact(workdir / "artifacts", "pfsr_fp32", mode="cubic")
    (tmp_path / "shared").symlink_to(shared_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", _readme_example()], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].endswith("faces in the last frame") and int(lines[-1].split()[0]) >= 3
    face_lines = [line.split() for line in lines[:-1]]
    assert face_lines and max(int(parts[0]) for parts in face_lines) >= 2  # faces confirmed after a few frames


def test_single_frame_call_enhances_every_face_at_once(shared_dir, detector_path, sr_artifact):
    from runtime import FaceSR

    frame = cv2.imread(str(shared_dir / "data" / "scenes" / "group-4faces-small.png"))
    with FaceSR(str(sr_artifact), detector=str(detector_path), enhance_all=True) as sr:
        first, second = sr(frame), sr(frame)
    assert len(first.faces) >= 3 and all(face.sr is not None for face in first.faces)
    assert first.frame is not None and first.view.shape == frame.shape
    assert {f.track_id for f in first.faces}.isdisjoint({f.track_id for f in second.faces})  # photos: no tracks kept


def test_stream_confirms_faces_before_enhancing_them(shared_dir, detector_path, sr_artifact):
    from runtime import FaceSR

    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    with FaceSR(str(sr_artifact), detector=str(detector_path), enhance_all=True) as sr:
        results = list(sr.stream(video, max_frames=4))
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert not results[0].faces and results[3].faces  # confirmed over 3 detections, as the CLI does


def test_a_backend_that_fails_to_open_closes_the_ones_opened_before_it(monkeypatch, detector_path, sr_artifact):
    import contextlib

    import runtime.api as api

    opened, closed = [], []

    @contextlib.contextmanager
    def fake_backend(kind, artifact, self_ensemble=False):
        if opened:
            raise RuntimeError("the second model's backend cannot open")
        opened.append(artifact)
        try:
            yield object()
        finally:
            closed.append(artifact)

    monkeypatch.setattr(api, "create_backend", fake_backend)
    with pytest.raises(RuntimeError, match="second model"):
        api.FaceSR([str(sr_artifact), str(sr_artifact)], detector=str(detector_path))
    assert closed == opened and len(closed) == 1
