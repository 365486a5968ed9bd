"""Enhanced faces keep the recorded low frequencies (runtime.tone): a model's brightness drift is undone, the
detail it adds is kept, and plain interpolation passes nearly untouched."""
import cv2
import numpy as np
import pytest

from conftest import make_sr_artifact
from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.faces import FaceJob, Square, crop_square
from runtime.pipeline import PreparedFrame, enhance_frames
from runtime.routing import Route
from runtime.tone import keep_recorded_tones

DRIFT = 12  # grey levels


def _recorded(side=24, seed=0):
    return np.random.default_rng(seed).integers(40, 200, (side, side, 3), dtype=np.uint8)


def test_a_brightness_drift_is_undone_and_the_added_detail_kept():
    recorded = _recorded()
    upscaled = recorded.repeat(4, axis=0).repeat(4, axis=1).astype(np.int16)
    checker = np.where((np.indices((96, 96)).sum(0) % 2)[..., None] == 0, 20, -20).astype(np.int16)  # averages out
    enhanced = (upscaled + DRIFT + checker).astype(np.uint8)
    fixed = keep_recorded_tones(enhanced, recorded)
    assert np.abs(fixed.astype(np.int16) - (upscaled + checker)).max() <= 1


def test_plain_interpolation_is_left_nearly_as_it_was():
    recorded = cv2.GaussianBlur(_recorded(32, seed=1), (0, 0), 1.0)
    bicubic = cv2.resize(recorded, (256, 256), interpolation=cv2.INTER_CUBIC)
    change = np.abs(keep_recorded_tones(bicubic, recorded).astype(np.int16) - bicubic)
    assert change.mean() < 0.3 and change.max() <= 3


@pytest.mark.parametrize("tiling", [None, {"stride": 16, "ramp": 4}])
def test_a_drifting_model_comes_out_in_the_recorded_tones(tmp_path, tiling):
    """Through the pipeline's resize route and its tiled route: a nearest-neighbour 'model' that brightens
    everything by DRIFT grey levels gives the faces back as the plain nearest-neighbour upscale."""
    extra = {"tiling": tiling} if tiling else {}
    path = make_sr_artifact(tmp_path, "t", "nearest", in_size=32, out_size=128, **extra)
    frame = _recorded(160, seed=2)
    square = Square(40.0, 30.0, 32.0)
    job = FaceJob(0, (40.0, 30.0, 32.0, 32.0), square, crop_square(frame, square))
    prepared = PreparedFrame(frame, 0, [], [job], [Route(0, "enhanced")], 0, 0)
    with create_backend("onnxruntime", load_artifact(path), providers=["CPUExecutionProvider"]) as backend:
        plain = backend._infer
        backend._infer = lambda feeds: {"sr": plain(feeds)["sr"] + DRIFT / 255}
        (face,), = enhance_frames([backend], [prepared])
    expected = job.crop.repeat(4, axis=0).repeat(4, axis=1).astype(np.int16)
    assert face.sr.shape == expected.shape and np.abs(face.sr.astype(np.int16) - expected).max() <= 1
