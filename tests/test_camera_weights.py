"""The camera-grade weights (models/weights/*_camera_utk.safetensors): on test faces recorded as a camera records
them (training.degrade, camera level) they beat bicubic of the same recording, and they say what they were
trained on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models import create_model
from models.weights import read_metadata
from training.data import DEFAULT_DATA_DIR, load_split
from training.evaluate import per_face_psnr, record_faces, super_resolve, upscale_bicubic

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"

pytestmark = [pytest.mark.shared, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not (DEFAULT_DATA_DIR / "splits.json").is_file(),
                                 reason="../shared/data/faces-utk not available")]


@pytest.mark.parametrize("name, size", [("pfsr", 16), ("pfsr_x4", 32), ("dic", 16)])
def test_camera_weights_beat_bicubic_on_what_a_camera_records(split_cache, name, size):
    weights = WEIGHTS / f"{name}_camera_utk.safetensors"
    assert json.loads(read_metadata(weights)["degradation"])["camera"]["camera"] > 0  # trained on camera input
    hr = load_split("test", cache_dir=split_cache).subset(40).hr
    lr = record_faces(hr, size, "camera")
    model = create_model(name, weights=weights).eval()
    gain = per_face_psnr(super_resolve(model, lr), hr) - per_face_psnr(upscale_bicubic(lr, hr.shape[1]), hr)
    assert gain.mean() > 0.5, gain.mean()  # measured on all 500 test faces: see the models' cards
    assert np.mean(gain < 0) < 0.2
