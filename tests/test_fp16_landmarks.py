"""--precision fp16 with Cast(to=float32) nodes (DIC --with-landmarks: arg-max index -> pixel coordinates).

onnxconverter-common retypes float32 values to float16 but leaves a Cast's `to` alone; export.precision keeps
those casts fp32 so the graph passes the ONNX checker, and keeps every graph output float32.
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from export.build import PrecisionOptions, build
from export.inputs import face_inputs
from export.precision import convert_fp16
from export.verify import LANDMARK_AGREEMENT
from models import shipped_weights
from runtime.shared_data import utk_dir

GATE_IMAGES = 16
LANDMARK_FACES = 32
HEATMAP_STRIDE_PX = 4.0  # DIC: 128-px output / 32-px heatmap


def _run(path, feeds):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feeds)


def _argmax_model(path):
    """x [N,8] -> relu(x), arg-max*4 (ArgMax -> Cast(to=float32) -> Mul) and the index through a Cast that
    writes a graph output: the two shapes of the landmark path. One Cast is unnamed on purpose."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["relu"], name="relu"),
         helper.make_node("ArgMax", ["relu"], ["index"], axis=1, keepdims=0, name="argmax"),
         helper.make_node("Cast", ["index"], ["index_f"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["index_f", "stride"], ["coords"], name="mul"),
         helper.make_node("Cast", ["index"], ["index_out"], to=TensorProto.FLOAT, name="cast_out")],
        "argmax_coords",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
         for name, shape in (("relu", ["N", 8]), ("coords", ["N"]), ("index_out", ["N"]))],
        initializer=[helper.make_tensor("stride", TensorProto.FLOAT, [], [4.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_fp16_keeps_casts_to_float32_and_float32_outputs(tmp_path):
    src = _argmax_model(tmp_path / "m.onnx")
    dst = tmp_path / "m16.onnx"
    info = convert_fp16(src, dst)
    model = onnx.load(str(dst))
    onnx.checker.check_model(model, full_check=True)  # failed with a Cast type conflict before the fix
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT] * 3
    assert "cast_out" in info["fp32_nodes"] and len(info["fp32_nodes"]) == 3  # ArgMax + both casts
    # Distinct values that float16 represents exactly: the arg-max cannot change, so results are equal.
    x = np.stack([np.random.default_rng(i).permutation(8) / 8 for i in range(4)]).astype(np.float32)
    ref, got = _run(src, {"x": x}), _run(dst, {"x": x})
    assert all(g.dtype == np.float32 for g in got)
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[2], ref[2])


@pytest.mark.skipif(utk_dir() is None, reason="../shared/data/faces-utk not found (the accuracy gate needs it)")
@pytest.mark.skipif(shipped_weights("dic") is None, reason="no shipped DIC weights")
def test_fp16_with_landmarks_builds_and_matches_fp32(tmp_path):
    # The shipped DIC (config cpu_demo, 0.5 M parameters) and not the random tiny one: random heatmaps are
    # nearly flat, so fp16 rounding moves their arg-max anywhere; trained ones have one clear peak.
    options = PrecisionOptions(gate_images=GATE_IMAGES)
    fp16 = build("dic", steps=1, with_landmarks=True, precision="fp16", outdir=tmp_path, options=options)
    fp32 = build("dic", steps=1, with_landmarks=True, outdir=tmp_path)
    onnx.checker.check_model(onnx.load(str(fp16.onnx_path)), full_check=True)
    m = fp16.manifest
    assert [(o.name, o.dtype) for o in m.outputs] == [("sr", "float32"), ("landmarks", "float32")]
    assert m.checks["accuracy"]["passed"] and m.checks["tensorrt_compat"]["passed"]
    casts = [n.name for n in onnx.load(str(fp32.onnx_path)).graph.node
             if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT]
    assert casts and set(casts) <= set(m.precision_conversion["fp32_nodes"])

    lr, _ = face_inputs(LANDMARK_FACES)
    (sr16, lm16), (sr32, lm32) = _run(fp16.onnx_path, {"lr": lr}), _run(fp32.onnx_path, {"lr": lr})
    assert lm16.dtype == np.float32 and lm16.shape == lm32.shape == (LANDMARK_FACES, 68, 2)
    # Tolerance: landmarks are heatmap arg-maxes (multiples of the 4-px stride), so they either match exactly
    # or fp16 rounding picked a near-tied neighbouring cell. As in the fp32 parity check, >= 99% of points
    # must be identical, and none may move by more than one cell (measured: 99.7% identical, max 4 px).
    diff = np.abs(lm16 - lm32)
    assert (diff.max(-1) == 0).mean() >= LANDMARK_AGREEMENT
    assert diff.max() <= HEATMAP_STRIDE_PX
    assert np.abs(sr16 - sr32).max() < 5e-3
