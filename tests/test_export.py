"""export.build: unrolled ONNX parity for every step count, landmarks, manifest, bad input."""
import hashlib
import json
from pathlib import Path

import jsonschema

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import ExportError
from export.build import build, main
from models import create_model
from runtime.contract import SCHEMA_FILE, BatchProfile, read_manifest
from runtime.shared_data import utk_dir

TINY_STEPS = 3


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_weights):
    """One export per step count, plus one with landmarks (shared by the tests below)."""
    outdir = tmp_path_factory.mktemp("artifacts")
    results = {steps: build("dic", weights=str(tiny_weights), steps=steps, outdir=outdir)
               for steps in range(1, TINY_STEPS + 1)}
    results["lm"] = build("dic", weights=str(tiny_weights), steps=2, with_landmarks=True, outdir=outdir)
    return results


def _op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("steps", range(1, TINY_STEPS + 1))
def test_unrolled_parity_every_step_count(exported, tiny_weights, steps):
    result = exported[steps]
    parity = result.manifest.checks["parity"]
    assert parity["passed"] and parity["sr_max_abs_error"] <= 1e-4
    assert parity["runtime"].startswith("runtime onnxruntime backend")
    # Independent re-check with a fresh batch of 3 noise inputs.
    model = create_model("dic", weights=tiny_weights)
    lr = np.random.default_rng(steps).random((3, 3, 16, 16), dtype=np.float32)
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    (sr,) = session.run(None, {"lr": lr})
    with torch.no_grad():
        expected = model.unroll(torch.from_numpy(lr), steps)[0][-1].clamp(0, 1).numpy()
    assert sr.shape == (3, 3, 128, 128)
    assert np.abs(sr - expected).max() <= 1e-4
    assert 0.0 <= sr.min() and sr.max() <= 1.0


def test_step_counts_give_different_graphs(exported):
    outputs = []
    lr = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    for steps in range(1, TINY_STEPS + 1):
        session = ort.InferenceSession(str(exported[steps].onnx_path), providers=["CPUExecutionProvider"])
        outputs.append(session.run(None, {"lr": lr})[0])
    # Random weights: the attention step changes little, but every extra step must change the output.
    assert all(np.abs(a - b).max() > 0 for a, b in zip(outputs, outputs[1:]))
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-3


def test_last_landmark_pass_left_out_without_landmarks(exported):
    # One step without landmarks needs no hourglass at all: no MaxPool, no ArgMax.
    assert not {"MaxPool", "ArgMax"} & _op_types(exported[1].onnx_path)
    assert {"MaxPool", "ArgMax"} <= _op_types(exported["lm"].onnx_path)


def test_landmarks_output(exported, tiny_weights):
    result = exported["lm"]
    session = ort.InferenceSession(str(result.onnx_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["sr", "landmarks"]
    lr = np.random.default_rng(5).random((2, 3, 16, 16), dtype=np.float32)
    sr, landmarks = session.run(None, {"lr": lr})
    assert landmarks.shape == (2, 68, 2) and landmarks.dtype == np.float32
    assert landmarks.min() >= 0 and landmarks.max() <= 124
    model = create_model("dic", weights=tiny_weights)
    with torch.no_grad():
        heatmaps = model.unroll(torch.from_numpy(lr), 2)[1][-1].numpy()
    flat = heatmaps.reshape(2, 68, -1).argmax(-1)
    np.testing.assert_array_equal(landmarks[..., 0], (flat % 32) * 4.0)
    np.testing.assert_array_equal(landmarks[..., 1], (flat // 32) * 4.0)
    assert result.manifest.checks["parity"]["landmarks_identical_share"] >= 0.99
    assert [o.name for o in result.manifest.outputs] == ["sr", "landmarks"]
    assert result.manifest.outputs[1].shape == ("N", 68, 2) and result.manifest.outputs[1].value_range == (0, 128)


def test_manifest_content(exported, tiny_weights):
    result = exported[2]
    manifest = json.loads(result.manifest_path.read_text())
    assert read_manifest(result.manifest_path) == result.manifest  # what was written is what the runtime reads
    jsonschema.validate(manifest, json.loads(SCHEMA_FILE.read_text()))
    assert manifest["format"] == "fsr-edge-manifest/2" and manifest["kind"] == "onnx"
    assert manifest["model"] == "dic" and manifest["steps"] == 2 and manifest["precision"] == "fp32"
    assert manifest["config"]["num_features"] == 16 and manifest["max_steps"] == TINY_STEPS
    assert manifest["onnx"] == result.onnx_path.name == "dic_s2_fp32.onnx"
    assert manifest["onnx_sha256"] == hashlib.sha256(result.onnx_path.read_bytes()).hexdigest()
    assert manifest["inputs"] == [{"name": "lr", "dtype": "float32", "shape": ["N", 3, 16, 16], "range": [0, 1]}]
    assert manifest["outputs"] == [{"name": "sr", "dtype": "float32", "shape": ["N", 3, 128, 128], "range": [0, 1]}]
    assert manifest["batch"] == {"min": 1, "opt": 8, "max": 32}
    assert manifest["opset"] == 18 == onnx.load(str(result.onnx_path)).opset_import[0].version
    assert manifest["weights"]["sha256"] == hashlib.sha256(Path(tiny_weights).read_bytes()).hexdigest()
    assert {"torch", "onnx", "python"} <= set(manifest["versions"])
    expected_source = "faces-utk/val[:16]" if utk_dir() else "random"
    assert manifest["checks"]["parity"]["inputs"] == expected_source
    compat = manifest["checks"]["tensorrt_compat"]
    assert compat["passed"] and set(compat["releases"]) == {"10.3", "10.x-jetpack7", "11"}
    graph = onnx.load(str(result.onnx_path)).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis


def test_batch_profile_parsing():
    assert BatchProfile.parse("1:4:16") == BatchProfile(1, 4, 16)
    assert BatchProfile.parse("8") == BatchProfile(1, 8, 8)
    for bad in ("0:1:2", "4:2:8", "a:b:c", "1:2"):
        with pytest.raises(ValueError, match="MIN:OPT:MAX"):
            BatchProfile.parse(bad)


# --- bad input -------------------------------------------------------------------------------------


def test_unknown_model(tmp_path):
    with pytest.raises(ExportError, match="unknown model 'dc'; available: dic, dicgan, msfsr, panini, pfsr"):
        build("dc", random_init=True, outdir=tmp_path)


def test_model_names_are_case_insensitive_and_normalized(tmp_path):
    result = build("DIC", random_init=True, config="tiny", steps=1, outdir=tmp_path)
    assert result.onnx_path.name == "dic_s1_fp32.onnx" and result.manifest.model == "dic"


def test_nan_weights_fail_parity_and_publish_nothing(tmp_path):
    import torch

    from training.checkpoints import save_weights

    model = create_model("dic", config="tiny")
    with torch.no_grad():
        model.conv_in[0].weight[0, 0, 0, 0] = float("nan")  # one NaN in one tensor
    weights = save_weights(model, tmp_path / "nan.safetensors", metadata={"config": model.config.to_dict()})
    with pytest.raises(ExportError, match=r"non-finite values \(NaN/Inf\) in 'sr'"):
        build("dic", weights=str(weights), steps=1, outdir=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_opset_recorded_is_the_files(tmp_path):
    with pytest.raises(ExportError, match="--opset 99"):
        build("dic", random_init=True, config="tiny", steps=1, opset=99, outdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_steps_out_of_range(tmp_path, tiny_weights):
    for steps in (0, TINY_STEPS + 1):
        with pytest.raises(ExportError, match=f"--steps {steps} is out of range: this model unrolls 1..3"):
            build("dic", weights=str(tiny_weights), steps=steps, outdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_precision_is_an_error(tmp_path):
    # fp16/int8 are implemented now (tests/test_precision.py); anything else is refused before any work.
    with pytest.raises(ExportError, match="--precision 'bf16': expected one of fp32, fp16, int8"):
        build("dic", random_init=True, config="tiny", precision="bf16", outdir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_weight_file_errors(tmp_path, tiny_weights):
    data = Path(tiny_weights).read_bytes()
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(data[: len(data) // 3])
    corrupt = tmp_path / "c.pth"
    corrupt.write_bytes(b"\x00garbage" * 100)
    cases = {tmp_path / "missing.pth": "not found", truncated: "truncated or corrupt", corrupt: "truncated or corrupt"}
    for path, message in cases.items():
        with pytest.raises(ExportError, match=message):
            build("dic", weights=str(path), outdir=tmp_path / "out")


def test_wrong_config_for_weights(tmp_path, tiny_weights):
    with pytest.raises(ExportError, match="do not match DIC: .*missing"):
        build("dic", weights=str(tiny_weights), config="small", outdir=tmp_path)


def test_no_shipped_weights_message_or_random_init(tmp_path, monkeypatch):
    import models
    monkeypatch.setattr(models, "WEIGHTS_DIR", tmp_path / "none")
    with pytest.raises(ExportError, match="--random-init"):
        build("dicgan", outdir=tmp_path)
    with pytest.raises(ExportError, match="either --weights or --random-init"):
        build("dic", weights="x.pth", random_init=True, outdir=tmp_path)


def test_unwritable_outdir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match="not writable"):
        build("dic", random_init=True, config="tiny", outdir=blocker / "sub")


def test_failed_verification_overwrites_nothing(tmp_path, tiny_weights, monkeypatch):
    import export.verify
    existing = tmp_path / "dic_s1_fp32.onnx"
    existing.write_bytes(b"previous artifact")
    monkeypatch.setattr(export.verify, "verify_parity", lambda *a, **k: {"passed": False, "sr_max_abs_error": 1.0})
    with pytest.raises(ExportError, match="does not match PyTorch"):
        build("dic", weights=str(tiny_weights), steps=1, outdir=tmp_path)
    assert existing.read_bytes() == b"previous artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dic_s1_fp32.onnx"]  # no temp files, no manifest


def test_cli_reports_errors_with_exit_code(tmp_path, capsys, caplog):
    assert main(["--model", "dic", "--random-init", "--config", "tiny", "--steps", "7", "--outdir", str(tmp_path)]) == 2
    assert "out of range" in caplog.text


@pytest.mark.parametrize("args, fragment", [
    (["--model", "dc"], "unknown model 'dc'; available: dic, dicgan, msfsr, panini, pfsr"),
    (["--model", "dic", "--batch", "0:1:2"], "--batch: batch profile 0:1:2"),
    (["--model", "pfsr", "--steps", "2"], "--steps 2 was given, but this model is not recurrent"),
    (["--model", "pfsr", "--with-landmarks"], "export without --with-landmarks"),
    (["--model", "dic", "--gate-images", "0", "--precision", "fp16"], "--gate-images 0"),
    (["--model", "dic", "--trt-targets", "9.9"], "--trt-targets 9.9: unknown"),
])
def test_cli_errors_are_one_line_and_exit_2(tmp_path, caplog, args, fragment):
    code = main([*args, "--random-init", "--config", "tiny", "--outdir", str(tmp_path)])
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert code == 2 and len(errors) == 1 and fragment in errors[0].getMessage()
    assert "Traceback" not in caplog.text and not list(tmp_path.iterdir())


@pytest.mark.parametrize("extra", [[], ["--weights", "somewhere.safetensors"], ["--precision", "int8"]])
def test_a_misspelt_model_is_one_error_line_and_exit_2_as_a_user_runs_it(tmp_path, extra):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "export.build", "--model", "dci", *extra, "--outdir", str(tmp_path)],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=300)
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2, run.stderr
    assert lines == ["ERROR export.build: unknown model 'dci'; available: dic, dicgan, msfsr, panini, pfsr, pfsr_x4. "
                     "Did you mean 'dic'?"]
    assert not list(tmp_path.iterdir())


def test_weights_of_another_model_are_named_as_such(tmp_path, tiny_weights, caplog):
    from training.checkpoints import save_weights

    model = create_model("dic", weights=str(tiny_weights))
    dic_file = save_weights(model, tmp_path / "dic.safetensors",
                            metadata={"config": model.config.to_dict(), "model": "dic"})
    assert main(["--model", "pfsr", "--weights", str(dic_file), "--outdir", str(tmp_path / "out")]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "holds 'dic' weights" in errors[0] and "use --model dic" in errors[0]
    # DIC and DICGAN share one generator: DIC weights export as DICGAN
    assert build("dicgan", weights=str(dic_file), steps=1, outdir=tmp_path / "gan").manifest.model == "dicgan"


def test_weights_trained_on_smaller_faces_carry_their_floor_into_the_manifest(tmp_path, tiny_weights):
    """--real-framing writes min_input_ratio into the weights; the export passes it to the runtime's routing."""
    from runtime.artifact import load_artifact
    from runtime.errors import ModelArtifactError
    from runtime.routing import default_min_face, model_fit
    from training.checkpoints import save_weights

    model = create_model("dic", weights=str(tiny_weights))
    framed = save_weights(model, tmp_path / "framed.safetensors",
                          metadata={"config": model.config.to_dict(), "min_input_ratio": 0.55})
    result = build("dic", weights=str(framed), steps=1, outdir=tmp_path / "a")
    manifest = json.loads(result.manifest_path.read_text())
    jsonschema.validate(manifest, json.loads(SCHEMA_FILE.read_text()))
    assert manifest["min_input_ratio"] == 0.55
    framed_artifact = load_artifact(result.manifest_path)
    assert model_fit(framed_artifact).min_native_px == pytest.approx(8.8)
    plain = build("dic", weights=str(tiny_weights), steps=1, outdir=tmp_path / "b")
    plain_artifact = load_artifact(plain.manifest_path)
    assert plain.manifest.min_input_ratio is None and model_fit(plain_artifact).min_native_px == 12
    # the default --min-face follows the floor down (faces the weights can use are not skipped), never up
    assert default_min_face([framed_artifact]) == pytest.approx(8.8)
    assert default_min_face([plain_artifact]) == pytest.approx(9.6)

    broken = save_weights(model, tmp_path / "broken.safetensors",
                          metadata={"config": model.config.to_dict(), "min_input_ratio": "small"})
    with pytest.raises(ExportError, match="min_input_ratio"):
        build("dic", weights=str(broken), steps=1, outdir=tmp_path / "c")
    data = {**manifest, "min_input_ratio": 1.5}
    (tmp_path / "a" / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="min_input_ratio"):
        read_manifest(tmp_path / "a" / "bad.json")
