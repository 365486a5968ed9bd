"""Camera-grade twins: the per-face recording gate (runtime.recording), its calibration, the export that writes the
twin beside the default, the contract fields, and the runtime that loads the twin and picks per face."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from runtime.artifact import load_artifact, with_twins
from runtime.contract import read_manifest
from runtime.errors import ModelArtifactError
from runtime.recording import FEATURES, RecordingGate, fit_gate, recording_features
from runtime.routing import CAMERA_GRADE, FORCED, Twins, ModelFit, Route
from tests.conftest import make_sr_artifact
from training.data import DEFAULT_DATA_DIR

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"
needs_faces = pytest.mark.skipif(not (DEFAULT_DATA_DIR / "splits.json").is_file(),
                                 reason="../shared/data/faces-utk not available")


def constant_gate(camera: bool, side: int = 16) -> RecordingGate:
    """A gate that says the same for every face (weights 0, a large bias)."""
    return RecordingGate(side, (0.0,) * 3, (1.0,) * 3, (0.0,) * 3, 10.0 if camera else -10.0)


# --- the gate -----------------------------------------------------------------------------------------------
def test_features_see_noise_and_are_taken_at_the_gate_side():
    rng = np.random.default_rng(0)
    smooth = np.tile(np.linspace(60, 180, 32, dtype=np.float32)[None, :, None], (32, 1, 3))
    noisy = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    smooth = smooth.astype(np.uint8)
    assert recording_features(noisy, 16)[0] > recording_features(smooth, 16)[0] + 1.0  # log noise, > e x more
    assert np.array_equal(recording_features(noisy, 16), recording_features(noisy[:, :, :].copy(), 16))
    small = recording_features(noisy, 16)
    assert small.shape == (len(FEATURES),) and np.isfinite(small).all()
    with pytest.raises(ValueError, match="BGR face of at least 3x3"):
        recording_features(noisy[:2, :2], 16)
    with pytest.raises(ValueError, match="BGR face"):
        recording_features(noisy[..., 0], 16)


def test_fit_gate_learns_which_side_is_which():
    rng = np.random.default_rng(1)
    features = rng.normal(0, 1, (400, 3))
    advantage = features[:, 0] - 0.2  # the camera-grade weights win where the first feature is high
    gate = fit_gate(features, advantage, side=16)
    predicted = gate.scores(features) >= 0.5
    assert np.mean(predicted == (advantage > 0)) > 0.9
    assert gate.camera_score(np.zeros((8, 8, 3), np.uint8)) == pytest.approx(
        float(gate.scores(recording_features(np.zeros((8, 8, 3), np.uint8), 16)[None])[0]))


def test_gate_round_trips_and_refuses_malformed_entries():
    gate = constant_gate(True)
    assert RecordingGate.from_dict(gate.to_dict()) == gate
    broken = [{**gate.to_dict(), "features": ["chroma"]}, {**gate.to_dict(), "scale": [1.0, 0.0, 1.0]},
              {**gate.to_dict(), "weights": [1.0, "x", 1.0]}, {**gate.to_dict(), "side": 2},
              {**gate.to_dict(), "threshold": 1.5}, {**gate.to_dict(), "bias": float("nan")}]
    for entry in broken:
        with pytest.raises(ValueError):
            RecordingGate.from_dict(entry)


@needs_faces
@pytest.mark.shared
@pytest.mark.parametrize("name, size", [("pfsr", 16), ("pfsr_x4", 32), ("dic", 16)])
def test_shipped_gates_send_heavy_recordings_to_the_twin_and_clean_ones_to_the_default(split_cache, name, size):
    from training.evaluate import record_faces
    from calibration.recording_gate import read_gate
    from training.data import load_split

    gate = read_gate(WEIGHTS / f"{name}_camera_utk.safetensors")
    assert gate.side == size
    hr = load_split("test", cache_dir=split_cache).subset(60).hr  # calibration used the val split
    share = {level: np.mean([gate.prefers_camera(face[..., ::-1]) for face in record_faces(hr, size, level)])
             for level in ("clean", "heavy")}
    assert share["heavy"] > 0.75 and share["clean"] < 0.3, share  # measured on 500: see the camera-grade cards


@pytest.mark.parametrize("name", ["pfsr", "pfsr_x4", "dic"])
def test_each_shipped_gate_was_fitted_for_the_weights_shipped_now(name):
    """Retrained weights need a refit (`python -m calibration.recording_gate --model NAME --write`)."""
    from calibration.recording_gate import read_gate, tensor_digest
    from models import camera_grade_weights, shipped_weights

    camera = camera_grade_weights(name)
    gate = read_gate(camera)
    assert dict(gate.fitted_to) == {"clean": tensor_digest(shipped_weights(name)), "camera": tensor_digest(camera)}


# --- routing ------------------------------------------------------------------------------------------------
def test_twins_pair_by_fit_and_only_the_default_is_routed():
    x8, x4 = ModelFit.for_sides(16, 128, tiled=True), ModelFit.for_sides(32, 128, tiled=True)
    twins = Twins.pair([x8, x4, x8], [None, None, constant_gate(True)])
    assert twins.primary == (0, 1) and set(twins.twin_of) == {0}
    assert twins.route(12, 96, [x8, x4, x8]).model == 0  # the twin (index 2) is never chosen by size
    face = np.zeros((12, 12, 3), np.uint8)
    assert twins.choose(Route(0, "enhanced"), face) == Route(2, CAMERA_GRADE)
    assert twins.choose(Route(1, "enhanced"), face).model == 1  # no twin for x4
    assert twins.choose(Route(0, FORCED), face).reason == FORCED  # forced faces stay forced (not tiled)
    stay = Twins.pair([x8, x8], [None, constant_gate(False)])
    assert stay.choose(Route(0, "enhanced"), face) == Route(0, "enhanced")


def test_a_gated_model_without_a_partner_routes_like_any_model():
    x8, x4 = ModelFit.for_sides(16, 128), ModelFit.for_sides(32, 128)
    twins = Twins.pair([x8, x4], [None, constant_gate(True, 32)])
    assert twins.primary == (0, 1) and twins.twin_of == {}


# --- contract and loading ------------------------------------------------------------------------------------
def twin_pair(folder: Path, gate: dict | None) -> Path:
    """A default artifact whose manifest names a twin artifact carrying `gate`; returns the default's manifest."""
    twin = make_sr_artifact(folder, "m_camera", recording_gate=gate)
    return make_sr_artifact(folder, "m", camera_grade=twin.name)


def test_the_runtime_loads_the_twin_the_manifest_names(tmp_path):
    default = twin_pair(tmp_path, constant_gate(True).to_dict())
    loaded = with_twins([load_artifact(default)])
    assert [a.path.name for a in loaded] == ["m.json", "m_camera.json"]
    assert read_manifest(tmp_path / "m_camera.json").recording_gate["bias"] == 10.0
    assert len(with_twins([load_artifact(default), load_artifact(tmp_path / "m_camera.json")])) == 2


def test_a_missing_or_gateless_twin_is_a_warning_and_the_default_still_runs(tmp_path, caplog):
    default = twin_pair(tmp_path / "gone", constant_gate(True).to_dict())
    (tmp_path / "gone" / "m_camera.onnx").unlink()
    with caplog.at_level(logging.WARNING):
        assert [a.path.name for a in with_twins([load_artifact(default)])] == ["m.json"]
    assert "camera-grade twin cannot be used" in caplog.text and "export.build --model" in caplog.text
    caplog.clear()
    plain = twin_pair(tmp_path / "plain", None)
    with caplog.at_level(logging.WARNING):
        assert len(with_twins([load_artifact(plain)])) == 1
    assert "has no recording_gate" in caplog.text


def test_the_contract_refuses_a_twin_outside_the_folder_and_a_broken_gate(tmp_path):
    default = twin_pair(tmp_path, constant_gate(True).to_dict())
    data = json.loads(default.read_text())
    data["camera_grade"] = "../elsewhere/m_camera.json"
    default.write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="camera_grade"):
        load_artifact(default)
    twin = tmp_path / "m_camera.json"
    data = json.loads(twin.read_text())
    data["recording_gate"]["scale"] = [1, -1, 1]
    twin.write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="recording_gate.scale"):
        load_artifact(twin)


@pytest.mark.shared
def test_the_enhancer_sends_faces_to_the_twin_when_its_gate_says_so(tmp_path, shared_dir, detector_path):
    import cv2

    from runtime.api import FaceSR

    photo = str(shared_dir / "data" / "scenes" / "group-6faces.jpg")
    small = cv2.resize(cv2.imread(photo), None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)
    for camera, expected in ((True, "m_camera.json"), (False, "m.json")):
        folder = tmp_path / str(camera)
        default = twin_pair(folder, constant_gate(camera).to_dict())
        with FaceSR(str(default), detector=str(detector_path), upscale=8) as sr:
            faces = [f for f in sr(small).faces if f.sr is not None]
            names = {sr.backends[f.model].artifact.path.name for f in faces}
        assert faces and names == {expected}
        assert all((f.route == CAMERA_GRADE) == camera for f in faces)
    with FaceSR(str(default), detector=str(detector_path), upscale=8, camera_grade=False) as sr:
        assert len(sr.backends) == 1


@pytest.mark.slow
@pytest.mark.shared
def test_export_writes_the_twin_first_and_names_it(tmp_path, capsys):
    from export.build import main

    assert main(["--model", "pfsr", "--outdir", str(tmp_path)]) == 0
    default, twin = read_manifest(tmp_path / "pfsr_fp32.json"), read_manifest(tmp_path / "pfsr_camera_fp32.json")
    assert default.camera_grade == "pfsr_camera_fp32.json" and default.recording_gate is None
    assert RecordingGate.from_dict(twin.recording_gate).side == 16
    assert twin.weights.path.endswith("pfsr_camera_utk.safetensors")
    fused = read_manifest(tmp_path / "pfsr_fused_fp32.json")  # and the fused-grade twin (tests/test_fused_twins.py)
    assert default.fused_grade == "pfsr_fused_fp32.json" and fused.fused_input == {"burst": 8}
    assert fused.weights.path.endswith("pfsr_fused_utk.safetensors") and fused.recording_gate is None
    out = capsys.readouterr().out
    assert "camera-grade twin:" in out and "fused-grade twin:" in out
    solo = tmp_path / "solo"
    assert main(["--model", "pfsr", "--no-camera-grade", "--no-fused-grade", "--outdir", str(solo)]) == 0
    assert sorted(p.name for p in solo.iterdir()) == ["pfsr_fp32.json", "pfsr_fp32.onnx"]
    assert read_manifest(solo / "pfsr_fp32.json").camera_grade is None
    shutil.rmtree(tmp_path)
