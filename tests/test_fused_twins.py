"""Fused-grade twins: training bursts fused as the runtime fuses them (training.burst), the contract fields, the
loading, and the runtime that gives faces fused with earlier frames to the twin trained on such faces."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from runtime.artifact import load_artifact, with_twins
from runtime.backends import create_backend
from runtime.errors import ModelArtifactError
from runtime.pipeline import EnhanceConfig, Enhancer
from runtime.recording import RecordingGate
from runtime.routing import CAMERA_GRADE, FORCED, FUSED_GRADE, ModelFit, Route, Twins
from tests.conftest import make_sr_artifact
from tests.helpers import CPU, FakeDetector, det
from training.burst import burst_lr_set, fuse_burst, record_burst
from training.degrade import DegradationParams, degrade_face


def textured_face(seed: int = 0, side: int = 128) -> np.ndarray:
    """A smooth random RGB texture standing in for an HR face (registration needs structure, not a face)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (side // 16, side // 16, 3)).astype(np.float32)
    return np.clip(cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def constant_gate(camera: bool) -> RecordingGate:
    return RecordingGate(16, (0.0,) * 3, (1.0,) * 3, (0.0,) * 3, 10.0 if camera else -10.0)


# --- training bursts ----------------------------------------------------------------------------------------
def test_a_fused_burst_registers_its_shaken_frames_and_takes_noise_out():
    hr = textured_face()
    noisy = DegradationParams("camera", noise=("gaussian", 8.0, False))
    rng = np.random.default_rng(0)
    burst = record_burst(hr, 16, noisy, 8, rng)
    assert len(burst) == 8 and all(frame.shape == (32, 32, 3) for frame in burst)  # the face with its context
    fused, registered = fuse_burst(burst)
    assert fused.shape == (16, 16, 3) and registered >= 5
    pad = hr.shape[0] // 2
    truth = degrade_face(cv2.copyMakeBorder(hr, pad, pad, pad, pad, cv2.BORDER_REFLECT_101), 32,
                         DegradationParams("clean"), rng)[8:24, 8:24].astype(float)
    rms = lambda image: float(np.sqrt(np.mean((image.astype(float) - truth) ** 2)))  # noqa: E731
    assert rms(fused) < 0.7 * rms(burst[0][8:24, 8:24])  # 8 frames: much less noise than the current one


def test_the_fused_val_set_is_seeded():
    hr = np.stack([textured_face(seed) for seed in range(3)])
    first = burst_lr_set(hr, 16, "camera", 4, seed=5)
    assert first.shape == (3, 16, 16, 3) and first.dtype == np.uint8
    assert np.array_equal(first, burst_lr_set(hr, 16, "camera", 4, seed=5))
    assert not np.array_equal(first, burst_lr_set(hr, 16, "camera", 4, seed=6))
    with pytest.raises(ValueError, match="unknown degradation level"):
        burst_lr_set(hr, 16, "dusk", 4, seed=5)


# --- routing ------------------------------------------------------------------------------------------------
def test_fused_faces_go_to_the_fused_twin_and_the_rest_to_the_gate():
    x8 = ModelFit.for_sides(16, 128, tiled=True)
    fits = [x8, x8, x8]  # default, camera-grade twin, fused-grade twin
    twins = Twins.pair(fits, [None, constant_gate(True), None], [False, False, True])
    assert twins.primary == (0,) and twins.fused_of == {0: 2} and set(twins.twin_of) == {0}
    face = np.zeros((12, 12, 3), np.uint8)
    assert twins.choose(Route(0, "enhanced"), face, fused_with=3) == Route(2, FUSED_GRADE)
    assert twins.choose(Route(0, "enhanced"), face, fused_with=0) == Route(1, CAMERA_GRADE)
    assert twins.choose(Route(0, FORCED), face, fused_with=3) == Route(2, FORCED)
    clean = Twins.pair(fits, [None, constant_gate(False), None], [False, False, True])
    assert clean.choose(Route(0, "enhanced"), face, fused_with=3) == Route(0, "enhanced")  # the gate says clean
    alone = Twins.pair([x8, x8], [None, None], [False, True])
    assert alone.choose(Route(0, "enhanced"), face) == Route(0, "enhanced")  # not fused: the default
    assert Twins.pair([x8], [None]).primary == (0,) and not Twins.pair([x8], [None])


# --- contract and loading ------------------------------------------------------------------------------------
def fused_pair(folder, fused_input=None):
    twin = make_sr_artifact(folder, "m_fused", fused_input=fused_input if fused_input is not None else {"burst": 8})
    return make_sr_artifact(folder, "m", fused_grade=twin.name)


def test_the_fused_twin_is_loaded_only_for_runs_that_fuse(tmp_path, caplog):
    default = fused_pair(tmp_path / "ok")
    assert [a.path.name for a in with_twins([load_artifact(default)])] == ["m.json"]
    loaded = with_twins([load_artifact(default)], ("camera", "fused"))
    assert [a.path.name for a in loaded] == ["m.json", "m_fused.json"]
    assert loaded[1].manifest.fused_input == {"burst": 8}
    plain = make_sr_artifact(tmp_path / "plain", "m_fused")
    make_sr_artifact(tmp_path / "plain", "m", fused_grade=plain.name)
    with caplog.at_level(logging.WARNING):
        assert len(with_twins([load_artifact(tmp_path / "plain" / "m.json")], ("fused",))) == 1
    assert "has no fused_input" in caplog.text


@pytest.mark.parametrize("field, value", [("fused_input", {"burst": 1}), ("fused_input", {"burst": 8, "x": 1}),
                                          ("fused_input", [8]), ("fused_grade", "../m_fused.json")])
def test_the_contract_refuses_malformed_fused_fields(tmp_path, field, value):
    default = fused_pair(tmp_path)
    path = default if field == "fused_grade" else tmp_path / "m_fused.json"
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match=field):
        load_artifact(path)


def test_the_enhancer_gives_fused_faces_to_the_fused_twin(tmp_path):
    default = fused_pair(tmp_path)
    artifacts = with_twins([load_artifact(default)], ("fused",))
    rng = np.random.default_rng(0)
    coarse = rng.uniform(0, 255, (15, 20, 3)).astype(np.float32)  # texture phase correlation locks onto
    scene = cv2.resize(coarse, (160, 120), interpolation=cv2.INTER_CUBIC)
    frames = [np.clip(np.rint(scene + rng.normal(0, 4, scene.shape)), 0, 255).astype(np.uint8) for _ in range(5)]
    backends = [create_backend("onnxruntime", a, providers=CPU).activate() for a in artifacts]
    routes = {}
    for fuse_frames in (1, 4):
        config = EnhanceConfig(enhance_all=True, show_fps=False, fuse_frames=fuse_frames, confirm_hits=1)
        enhancer = Enhancer(backends, FakeDetector([det(60, 40, 30)]), config)
        routes[fuse_frames] = [[(face.model, face.route) for face in enhancer.process(frame, i).faces
                                if face.sr is not None] for i, frame in enumerate(frames)]
    assert all(faces == [(0, FORCED)] for faces in routes[1])  # no fusion: the default, as before
    assert routes[4][0] == [(0, FORCED)]  # nothing to fuse with yet
    assert all(faces == [(1, FORCED)] for faces in routes[4][1:]), routes[4]  # fused: the twin (forced: --enhance-all)


# --- the shipped weights ----------------------------------------------------------------------------------------
def test_the_shipped_fused_twin_is_the_camera_twins_network_trained_on_bursts():
    from export.build import _fused_input
    from models import camera_grade_weights, fused_grade_weights, read_metadata

    fused = fused_grade_weights("pfsr")
    assert fused is not None and _fused_input(fused) == {"burst": 8}
    assert read_metadata(fused)["config"] == read_metadata(camera_grade_weights("pfsr"))["config"]
    assert fused_grade_weights("pfsr_x4") is None and _fused_input(camera_grade_weights("pfsr")) is None


@pytest.mark.parametrize("degradation", ['{"burst": 1}', '{"burst": "8"}', "not json"])
def test_export_refuses_weights_whose_burst_is_malformed(tmp_path, degradation):
    from safetensors.numpy import save_file

    from export.build import ExportError, _fused_input

    path = tmp_path / "w.safetensors"
    save_file({"x": np.zeros(1, np.float32)}, str(path), metadata={"degradation": degradation})
    with pytest.raises(ExportError, match="degradation"):
        _fused_input(path)


def test_the_camera_benchmark_scores_fused_bursts_against_the_current_frame():
    from benchmarks.camera import recordings

    hr = np.stack([textured_face(seed) for seed in range(2)])
    current, fused = recordings(hr, 16, "camera", burst=4)
    assert current.shape == fused.shape == (2, 16, 16, 3) and not np.array_equal(current, fused)
    single, same = recordings(hr, 16, "camera", burst=0)
    assert single is same  # one recording: the models read what bicubic upscales
