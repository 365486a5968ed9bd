"""Helpers shared by several test modules: test doubles of the runtime and the miniature training setup.
(Fixtures live in conftest.py; these are plain objects the tests build themselves.)"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from runtime.detect import Detection
from runtime.outputs import NullSink
from runtime.sources import ReadStatus, Source, SourceURI

CPU = ["CPUExecutionProvider"]


# --- runtime ---------------------------------------------------------------------------------------------
def det(x, y, s=40.0, score=0.9):
    """A square detection of side s at (x, y)."""
    return Detection((float(x), float(y), s, s), score)


class FakeDetector:
    """Returns the given detections for every frame (so these tests need no detector model)."""

    def __init__(self, detections):
        self.detections = detections
        self.calls = 0

    def detect(self, frame):
        self.calls += 1
        return list(self.detections)

    def second_look_score(self, frame, detection):  # stills: the second look agrees with the first
        return detection.score


class ListSource(Source):
    def __init__(self, items):
        super().__init__(SourceURI("file", "list", "list"))
        self.items = list(items)

    def read(self, timeout=None):
        return self.items.pop(0) if self.items else (ReadStatus.EOS, None)


class ListSink(NullSink):
    def __init__(self):
        self.views = []

    def write(self, view, result=None):
        self.views.append(view)


def wait_until(condition, timeout_s: float, what: str = "the condition") -> None:
    """Poll `condition()` every 20 ms until it is true; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:.0f} s in vain for {what}"
        time.sleep(0.02)


def long_frame_folder(video: Path, folder: Path, count: int = 2000) -> Path:
    """A frame folder far longer than a test waits (names linking to the video's first three frames), so a run
    through it is still going when the test acts, whatever the machine's speed."""
    folder.mkdir()
    capture = cv2.VideoCapture(str(video))
    stills = []
    for index in range(3):
        ok, frame = capture.read()
        assert ok, f"cannot read {video}"
        stills.append(folder / f"still-{index}.png")
        cv2.imwrite(str(stills[-1]), frame)
    capture.release()
    for index in range(count):
        (folder / f"frame-{index:05d}.png").symlink_to(stills[index % 3].name)
    return folder


# --- training --------------------------------------------------------------------------------------------
MICRO = {"num_features": 8, "num_groups": 1, "hg_num_feature": 8, "num_fusion_block": 1, "num_steps": 2}


def fake_split(n=4, seed=0):
    """A FaceSplit of n random (but bicubic-consistent) faces with random landmarks."""
    from training.data import FaceSplit

    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    hr = np.asarray([np.asarray(Image.fromarray(h).resize((16, 16)).resize((128, 128), Image.BICUBIC)) for h in hr])
    lr = np.asarray([np.asarray(Image.fromarray(h).resize((16, 16), Image.BICUBIC)) for h in hr])
    lms = rng.uniform(20, 108, (n, 68, 2)).astype(np.float32)
    return FaceSplit([f"{i}.jpg" for i in range(n)], hr, lr, lms)


def train_args(data, out, *extra):
    """training.train arguments for a micro DIC run on `data` (the fake_data_dir fixture)."""
    from training import train as train_mod

    return train_mod.parse_args(["--config", json.dumps(MICRO), "--data", str(data), "--out", str(out),
                                 "--cache", "", "--batch", "2", "--lr", "1e-3", "--milestones", "2,3",
                                 "--val-every", "2", "--log-every", "1", "--threads", "1", *extra])
