"""--precision fp16/int8: converters, the accuracy gate, the Y-PSNR metric and the build wiring."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest

from export import ExportError
from export.build import build, main
from export.precision import (FP16_KEEP_FP32_OPS, PRECISIONS, PrecisionOptions, accuracy_gate, convert_fp16,
                              make_precision_onnx, quantize_int8)
from export.quality import mean_y_psnr
from export.verify import onnx_artifact
from runtime.artifact import load_artifact
from runtime.contract import read_manifest
from runtime.shared_data import utk_dir

GATE_IMAGES = 16
needs_utk = pytest.mark.skipif(utk_dir() is None, reason="../shared/data/faces-utk not found")


@pytest.fixture(scope="module")
def fp32_build(tmp_path_factory, tiny_weights):
    return build("dic", weights=str(tiny_weights), steps=1, outdir=tmp_path_factory.mktemp("fp32"))


@pytest.fixture(scope="module")
def fp32_onnx(fp32_build):
    return fp32_build.onnx_path


@pytest.fixture(scope="module")
def fp32_artifact(fp32_build):
    return load_artifact(fp32_build.manifest_path)


# --- metric ---------------------------------------------------------------------------------------


def test_mean_y_psnr_rounds_to_uint8():
    x = np.full((2, 3, 32, 32), 0.5, np.float32)
    # Differences below half a grey level vanish after rounding (capped at 100 dB).
    assert mean_y_psnr(x, x + 0.0015) == 100.0
    assert mean_y_psnr(x, x + 0.1) < 30
    # Only the 8-pixel border differs: cropped away, as in the official metric.
    y = x.copy()
    y[..., :8, :] = 0.0
    assert mean_y_psnr(x, y) == 100.0
    with pytest.raises(ValueError, match="differ in shape"):
        mean_y_psnr(x, x[:1])


# --- fp16 ---------------------------------------------------------------------------------------


def test_fp16_keeps_io_fp32_and_blocked_ops(fp32_onnx, tmp_path):
    out = tmp_path / "m16.onnx"
    info = convert_fp16(fp32_onnx, out)
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [f32]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [f32]
    assert any(t.data_type == f16 for t in model.graph.initializer)
    resize = [n.name for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type == "Resize"]
    assert resize and set(resize) <= set(info["fp32_nodes"])
    assert info["fp32_op_types"] == list(FP16_KEEP_FP32_OPS)
    lr = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    ref = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"]).run(None, {"lr": lr})[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"lr": lr})[0]
    assert got.dtype == np.float32 and np.abs(got - ref).max() < 5e-3


def test_fp16_unknown_node_name_is_a_clear_error(fp32_onnx, tmp_path):
    with pytest.raises(ExportError, match="no node named nope"):
        convert_fp16(fp32_onnx, tmp_path / "x.onnx", keep_nodes=["nope"])


@needs_utk
def test_fp16_build_passes_gate_and_writes_manifest(tiny_weights, tmp_path):
    result = build("dic", weights=str(tiny_weights), steps=1, precision="fp16", outdir=tmp_path,
                   options=PrecisionOptions(gate_images=GATE_IMAGES))
    m = result.manifest
    assert result.onnx_path.name == "dic_s1_fp16.onnx" and read_manifest(result.manifest_path) == m
    gate = m.checks["accuracy"]
    assert gate["passed"] and gate["images"] == f"faces-utk/val[:{GATE_IMAGES}]"
    assert gate["runtime"].startswith("runtime onnxruntime backend")
    assert abs(gate["delta_vs_gt_db"]) <= 0.05 and gate["fp16_vs_fp32_db"] > 50
    assert m.precision_conversion["fp32_nodes"] and m.checks["tensorrt_compat"]["passed"]
    assert "--stronglyTyped" in m.trtexec and "dic_s1_fp16.onnx" in m.trtexec
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dic_s1_fp16.json", "dic_s1_fp16.onnx"]


@needs_utk
def test_gate_failure_writes_nothing_and_warn_publishes(tiny_weights, fp32_artifact, tmp_path, monkeypatch):
    import dataclasses

    # A gate with a negative tolerance must fail: the error carries the numbers, and no file is left.
    strict = dataclasses.replace(PRECISIONS["fp16"], gate_tolerance_db=-1.0)
    monkeypatch.setitem(PRECISIONS, "fp16", strict)
    with pytest.raises(ExportError, match=r"accuracy gate failed: fp16 Y-PSNR vs GT .* dB.*--accuracy-gate warn"):
        build("dic", weights=str(tiny_weights), steps=1, precision="fp16", outdir=tmp_path,
              options=PrecisionOptions(gate_images=4))
    assert list(tmp_path.iterdir()) == []
    # --accuracy-gate warn: the same conversion is kept, and the manifest records the failed gate.
    _, gate = make_precision_onnx(fp32_artifact, tmp_path / "m16.onnx", strict,
                                  PrecisionOptions(gate_images=4, accuracy_gate="warn"))
    assert (tmp_path / "m16.onnx").is_file() and gate["passed"] is False
    assert gate["tolerance_db"] == -1.0 and "fp16_vs_gt_db" in gate


def test_bad_gate_option_is_rejected(tiny_weights, tmp_path):
    with pytest.raises(ExportError, match="--accuracy-gate 'sometimes'"):
        build("dic", weights=str(tiny_weights), precision="fp16", outdir=tmp_path,
              options=PrecisionOptions(accuracy_gate="sometimes"))


# --- int8 ---------------------------------------------------------------------------------------


@needs_utk
def test_int8_qdq_symmetric_per_channel(fp32_onnx, fp32_artifact, tmp_path):
    from export.inputs import face_inputs

    calib, _ = face_inputs(32, split="train")
    out = tmp_path / "m8.onnx"
    info = quantize_int8(fp32_onnx, out, calib, method="max")
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    zero_points = [inits[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)
    per_channel = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"
                   and n.input[0] in inits and inits[n.input[1]].ndim == 1]
    assert per_channel, "weights should have per-channel scales"
    assert info["calibration_inputs"] == 32 and info["excluded_nodes"]
    converted = onnx_artifact(out, fp32_artifact.inputs, fp32_artifact.outputs, fp32_artifact.batch)
    gate = accuracy_gate(fp32_artifact, converted, PRECISIONS["int8"], count=8)
    assert np.isfinite(gate["int8_vs_gt_db"]) and gate["int8_vs_fp32_db"] > 30


def test_int8_bad_calibration_method(fp32_onnx, tmp_path):
    with pytest.raises(ExportError, match="--calibration 'percentile'"):
        quantize_int8(fp32_onnx, tmp_path / "x.onnx", np.zeros((32, 3, 16, 16), np.float32), method="percentile")


def test_int8_cli_with_too_small_calibration_set(tiny_weights, tmp_path, caplog):
    bad = tmp_path / "small.npz"
    np.savez(bad, lr=np.zeros((4, 3, 16, 16), np.float32), sha256=np.array("x"), source=np.array("test"))
    rc = main(["--model", "dic", "--weights", str(tiny_weights), "--precision", "int8",
               "--calibration-data", str(bad), "--outdir", str(tmp_path / "out")])
    assert rc == 2
    assert "received 4 inputs, expected at least 32" in caplog.text
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --- a model's own int8 keep-list -------------------------------------------------------------------


def test_the_model_keep_list_selects_nodes_by_weight_name_and_yields_to_the_user(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    from export.precision import with_model_defaults
    from export.precision import get_precision, nodes_reading
    from models import MSFSR_CONFIGS, model_io

    weights = [numpy_helper.from_array(np.zeros((3, 3, 1, 1), np.float32), name)
               for name in ("stages.0.BUM.0.weight", "stages.0.BUM.3.weight")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "stages.0.BUM.0.weight"], ["a"], name="first"),
         helper.make_node("Conv", ["a", "stages.0.BUM.3.weight"], ["y"], name="second")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], weights)
    path = tmp_path / "two_convs.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert nodes_reading(path, ("*stages.*.BUM.0.weight",)) == ("first",)

    int8, fp16 = get_precision("int8"), get_precision("fp16")
    io = model_io("msfsr", MSFSR_CONFIGS["lite"])
    chosen = with_model_defaults(PrecisionOptions(), int8, io, path)
    assert chosen.exclude_op_types == ("Resize", "Tanh", "Add") and chosen.exclude_nodes == ("first",)
    users = PrecisionOptions(exclude_op_types=("Resize",))
    assert with_model_defaults(users, int8, io, path) == users  # --exclude-op-types replaces every default
    assert with_model_defaults(PrecisionOptions(), fp16, io, path) == PrecisionOptions()
