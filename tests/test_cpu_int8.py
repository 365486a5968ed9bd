"""int8 on ONNX Runtime's CPU provider: the export gate measures the Q/DQ artifact's own arithmetic (not the host
CPU's fused int8 kernels), and the runtime picks exact arithmetic on CPUs without VNNI."""
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from export.precision import PRECISIONS, accuracy_gate
from export.verify import onnx_artifact, run_onnx
from runtime import cpu_int8
from runtime.artifact import load_artifact
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.contract import BatchProfile, TensorSpec

AMD_EPYC_FLAGS = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx avx2 fma bmi2 sha_ni".split())
INTEL_VNNI_FLAGS = AMD_EPYC_FLAGS | {"avx512f", "avx512bw", "avx512_vnni"}


@pytest.mark.parametrize("machine, flags, exact", [
    ("x86_64", AMD_EPYC_FLAGS, False),  # AVX2 only: u8s8 products saturate at 16 bits
    ("x86_64", INTEL_VNNI_FLAGS, True),
    ("x86_64", AMD_EPYC_FLAGS | {"avx_vnni"}, True),
    ("x86_64", frozenset(), False),  # unreadable flags: the safe choice
    ("aarch64", frozenset({"fp", "asimd", "asimddp"}), True),
    ("aarch64", frozenset({"fp", "asimd"}), False),
])
def test_fused_int8_kernels_are_used_only_where_they_are_exact(machine, flags, exact):
    assert cpu_int8.fused_int8_is_exact(machine, flags) is exact


def test_session_config_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(cpu_int8, "fused_int8_is_exact", lambda: False)
    assert cpu_int8.qdq_session_config("auto") == {"session.disable_quant_qdq": "1"}
    assert cpu_int8.qdq_session_config("fused") == {}
    monkeypatch.setattr(cpu_int8, "fused_int8_is_exact", lambda: True)
    assert cpu_int8.qdq_session_config("auto") == {}
    assert cpu_int8.qdq_session_config("emulated") == {"session.disable_quant_qdq": "1"}
    with pytest.raises(ValueError, match="int8 kernels 'fast'"):
        cpu_int8.qdq_session_config("fast")


# --- a small Q/DQ graph and its arithmetic written out in numpy ----------------------------------------------

X_SCALE, Y_SCALE = 4.0 / 127, 6.0 / 127


def _quantize(x, scale):
    return np.clip(np.rint(x / scale), -128, 127)  # int8, zero point 0 (round half to even, saturate, as ONNX)


def _qdq_conv_model(path, weight):
    """x -> Q/DQ -> Conv(Q/DQ weight, per output channel) -> Q/DQ -> y, as quantize_static writes it."""
    w_scale = np.abs(weight).reshape(len(weight), -1).max(axis=1) / 127
    w_int8 = _quantize(weight, w_scale[:, None, None, None]).astype(np.int8)
    zero = lambda n: np.zeros(n, np.int8)  # noqa: E731
    inits = [numpy_helper.from_array(np.float32(X_SCALE), "xs"), numpy_helper.from_array(np.int8(0), "xz"),
             numpy_helper.from_array(np.float32(Y_SCALE), "ys"), numpy_helper.from_array(np.int8(0), "yz"),
             numpy_helper.from_array(w_int8, "wq"), numpy_helper.from_array(w_scale.astype(np.float32), "ws"),
             numpy_helper.from_array(zero(len(weight)), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=0),
             helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("QuantizeLinear", ["c", "ys", "yz"], ["cq"]),
             helper.make_node("DequantizeLinear", ["cq", "ys", "yz"], ["y"])]
    shape_in, shape_out = ["N", weight.shape[1], 8, 8], ["N", weight.shape[0], 8, 8]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    onnx.save(model, str(path))
    return w_int8.astype(np.float64) * w_scale[:, None, None, None]


def _reference(x, weight_dq):
    """The graph's arithmetic in float64 numpy: quantize the input, 3x3 conv, quantize the output."""
    xd = np.pad(_quantize(x, X_SCALE) * X_SCALE, ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, w = x.shape
    out = np.zeros((n, len(weight_dq), h, w))
    for dy in range(3):
        for dx in range(3):
            out += np.einsum("nchw,oc->nohw", xd[:, :, dy:dy + h, dx:dx + w], weight_dq[:, :, dy, dx])
    return _quantize(out, Y_SCALE) * Y_SCALE


@pytest.fixture
def qdq_artifact(tmp_path):
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.5, (4, 3, 3, 3)).astype(np.float32)
    weight_dq = _qdq_conv_model(tmp_path / "qdq.onnx", weight)
    spec_in = TensorSpec("x", "float32", ("N", 3, 8, 8))
    spec_out = TensorSpec("y", "float32", ("N", 4, 8, 8))
    artifact = onnx_artifact(tmp_path / "qdq.onnx", (spec_in,), (spec_out,), BatchProfile(1, 2, 4))
    return artifact, weight_dq


def test_emulated_int8_computes_the_graphs_own_arithmetic(qdq_artifact):
    """What the gate runs equals the Q/DQ arithmetic written out in numpy, whatever CPU runs it."""
    artifact, weight_dq = qdq_artifact
    x = np.random.default_rng(1).uniform(-3, 3, (4, 3, 8, 8)).astype(np.float32)
    out, provider = run_onnx(artifact, x, int8_kernels="emulated")
    assert provider == "CPUExecutionProvider"
    expected = _reference(x.astype(np.float64), weight_dq)
    # Equal up to a rounding tie flipped by fp32 sums: at most a few values one output step apart.
    off = np.abs(out["y"] - expected) > 1e-5
    assert off.mean() < 0.01 and np.abs(out["y"] - expected).max() <= Y_SCALE * 1.001
    assert np.abs(expected).max() > 5 * Y_SCALE  # the check covers more than a few output steps


def test_backend_session_runs_qdq_as_float_ops_where_fused_kernels_saturate(qdq_artifact, monkeypatch):
    artifact, _ = qdq_artifact
    monkeypatch.setattr(cpu_int8, "fused_int8_is_exact", lambda: False)  # an AVX2-only CPU
    with OnnxRuntimeBackend(artifact, providers=["CPUExecutionProvider"]) as backend:
        options = backend.session.get_session_options()
        assert options.get_session_config_entry("session.disable_quant_qdq") == "1"
    monkeypatch.setattr(cpu_int8, "fused_int8_is_exact", lambda: True)  # VNNI
    with OnnxRuntimeBackend(artifact, providers=["CPUExecutionProvider"]) as backend:
        with pytest.raises(Exception, match="does not have configuration"):
            backend.session.get_session_options().get_session_config_entry("session.disable_quant_qdq")


def test_int8_gate_figure_does_not_depend_on_the_hosts_int8_kernels(fp32_dic, tmp_path, monkeypatch):
    """The gate runs the int8 graph emulated on every CPU, and reports the host's fused kernels beside it."""
    from export.precision import quantize_int8
    from export.inputs import face_inputs

    calls = []
    real_run = run_onnx

    def spy(artifact, images, int8_kernels="auto"):
        calls.append((artifact.onnx_path.name, int8_kernels))
        return real_run(artifact, images, int8_kernels)

    monkeypatch.setattr("export.verify.run_onnx", spy)
    calib, _ = face_inputs(16, split="train")
    out = tmp_path / "int8.onnx"
    quantize_int8(fp32_dic.onnx_path, out, calib, method="max")
    converted = onnx_artifact(out, fp32_dic.inputs, fp32_dic.outputs, fp32_dic.batch)
    figures = []
    for exact in (True, False):  # a VNNI CPU, then an AVX2-only one
        monkeypatch.setattr(cpu_int8, "fused_int8_is_exact", lambda exact=exact: exact)
        gate = accuracy_gate(fp32_dic, converted, PRECISIONS["int8"], count=8)
        figures.append(gate["int8_vs_gt_db"])
        assert gate["host_kernels"]["cpu"] and "minus_gate_db" in gate["host_kernels"]
    assert figures[0] == figures[1]
    assert ("int8.onnx", "emulated") in calls and ("int8.onnx", "fused") in calls
    assert not [c for c in calls if c[0] == "int8.onnx" and c[1] == "auto"]


@pytest.fixture(scope="module")
def fp32_dic(tmp_path_factory, tiny_weights):
    from export.build import build

    result = build("dic", weights=str(tiny_weights), steps=1, outdir=tmp_path_factory.mktemp("fp32"))
    return load_artifact(result.manifest_path)


def test_an_fp16_artifact_on_the_cpu_warns_once_and_names_what_to_use(tmp_path, caplog):
    from runtime.backends import onnxruntime_backend
    from tests.conftest import make_sr_artifact

    manifest = make_sr_artifact(tmp_path, name="half", precision="fp16")
    onnxruntime_backend._warned.clear()
    with caplog.at_level(logging.WARNING, logger="runtime.backends.onnxruntime_backend"):
        for _ in range(2):
            with OnnxRuntimeBackend(load_artifact(manifest), providers=["CPUExecutionProvider"]):
                pass
    warnings = [r.getMessage() for r in caplog.records if "fp16 artifact" in r.getMessage()]
    assert len(warnings) == 1 and "fp32 or int8 export" in warnings[0]
