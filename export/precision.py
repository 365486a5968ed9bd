"""fp32 ONNX -> precision ONNX (fp16 or int8 Q/DQ), and the accuracy gate that checks it.

Converters (chosen because they install cleanly with pip here and need no CUDA):
- fp16: `onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True, op_block_list=...)`.
  The graph inputs/outputs stay float32; blocked nodes stay float32 behind Cast nodes.
  (NVIDIA ModelOpt's `modelopt.onnx.autocast` would be the first choice, but `nvidia-modelopt[onnx]` 0.47
  pins onnx~=1.21 and onnxruntime-gpu~=1.24 and pulls cupy-cuda12x: it conflicts with this environment.)
- int8: `onnxruntime.quantization.quantize_static` in QDQ format: symmetric int8 activations and weights
  (zero point 0), per-channel weights, calibrated with Entropy or MinMax on the calibration set. TensorRT
  parses such Q/DQ graphs as explicit quantization.

The accuracy gate runs both models through the runtime's ONNX Runtime backend on the UTK val split and
compares Y-PSNR (export.quality, the official metric) against ground truth HR and against the fp32 model.
An int8 graph is judged with its Q/DQ nodes run as float ops (`runtime.cpu_int8`, "emulated"): the arithmetic
the artifact defines and TensorRT computes, the same on every CPU. ONNX Runtime's own fused int8 kernels are
run beside it and reported: on x86 CPUs without VNNI they saturate and lose accuracy the artifact does not.

`PRECISIONS` is the one table of what each precision means; nothing else compares precision strings.
`make_precision_onnx` is the export's precision step (`export.build` calls it after the fp32 graph is verified).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from . import ExportError

if TYPE_CHECKING:
    from runtime.artifact import ModelArtifact

log = logging.getLogger(__name__)

# Op types kept in fp32 by default (decided by measurement, see docs/precision.md):
# - Resize: required; ONNX Runtime rejects an fp16 `scales` input, and TensorRT wants fp32 scales too.
# - ReduceMax / Div / Softmax / ArgMax: the heatmap normalisation and peak picking; cheap, and a division by
#   a max close to 0 (or a softmax over large logits) is where fp16 overflows.
FP16_KEEP_FP32_OPS = ("Resize", "ReduceMax", "Div", "Softmax", "ArgMax")
GATE_IMAGES = 200
CALIBRATION_METHODS = ("entropy", "max")
INT8_DEFAULT_EXCLUDE_OPS = ("Resize",)
_RUN_BATCH = 32
HOST_KERNEL_TOLERANCE_DB = 0.05  # fused int8 kernels further below the emulation than this: warned


# --- fp16 ---------------------------------------------------------------------------------------


def convert_fp16(src: str | os.PathLike, dst: str | os.PathLike, keep_op_types=FP16_KEEP_FP32_OPS,
                 keep_nodes=()) -> dict:
    """Write an fp16 copy of `src` to `dst` with fp32 graph I/O; returns what stayed fp32."""
    import onnx

    try:
        from onnxconverter_common import float16
    except ImportError as err:
        raise ExportError("--precision fp16 needs onnxconverter-common: pip install 'onnxconverter-common>=1.16'"
                          ) from err
    model = onnx.load(str(src))
    keep_op_types, keep_nodes = list(keep_op_types), list(keep_nodes)
    _check_node_names(model, keep_nodes, "fp16 keep-fp32 node")
    casts = _casts_to_fp32(model)
    keep_nodes += casts
    kept = [n.name for n in model.graph.node if n.op_type in keep_op_types or n.name in keep_nodes]
    fp32_outputs = [o.name for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=keep_op_types,
                                                 node_block_list=keep_nodes)
    _outputs_back_to_fp32(converted.graph, fp32_outputs)
    onnx.save(converted, str(dst))
    log.info("fp16: %d of %d nodes kept in fp32 (%s; %d Cast to float32)", len(kept), len(model.graph.node),
             ", ".join(keep_op_types), len(casts))
    return {"converter": _version("onnxconverter-common", "onnxconverter_common.float16"),
            "io_dtype": "float32", "fp32_op_types": keep_op_types, "fp32_nodes": kept}


def _casts_to_fp32(model) -> list[str]:
    """Names of the Cast(to=float32) nodes, which must stay fp32 (unnamed ones get a name here).

    The converter retypes every float32 value it does not block to float16 but leaves a Cast's `to`
    attribute alone, so a converted Cast(to=float32) would declare a float16 output: the checker rejects it.
    Such casts turn integers into floats (arg-max index -> landmark coordinates) and stay exact in fp32
    (up to 2**24; float16 only up to 2048); the converter puts a Cast to float16 after them.
    """
    import onnx

    names = []
    for i, node in enumerate(model.graph.node):
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and to == onnx.TensorProto.FLOAT:
            node.name = node.name or f"fp16_keep_cast_{i}"  # the block list is by name
            names.append(node.name)
    return names


def _outputs_back_to_fp32(graph, names) -> None:
    """keep_io_types misses a graph output written by a kept-fp32 node: the converter ends it with a Cast to
    float16. Make that Cast one to float32 again (the output dtypes are the manifest's contract)."""
    import onnx

    producers = {o: n for n in graph.node for o in n.output}
    for out in graph.output:
        if out.name in names and out.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            cast = producers.get(out.name)
            if cast is None or cast.op_type != "Cast":
                raise ExportError(f"fp16: graph output {out.name!r} became float16 and is not written by a Cast")
            next(a for a in cast.attribute if a.name == "to").i = onnx.TensorProto.FLOAT
            out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


# --- int8 ---------------------------------------------------------------------------------------


class _Reader:
    """onnxruntime CalibrationDataReader over an [N,3,16,16] array, in small batches.

    Supports `set_range` (onnxruntime's CalibStridedMinMax option): the calibrator then collects a few
    batches at a time and merges ranges/histograms, instead of holding every intermediate tensor of the
    whole set in memory (the Entropy calibrator was OOM-killed on 512 faces with 23 GB otherwise).
    """

    def __init__(self, data: np.ndarray, input_name: str, batch: int):
        self._batches = [data[i:i + batch] for i in range(0, len(data), batch)]
        self._input_name = input_name
        self._next, self._end = 0, len(self._batches)

    def __len__(self):
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int):
        self._next, self._end = start_index, min(end_index, len(self._batches))

    def get_next(self):
        if self._next >= self._end:
            return None
        self._next += 1
        return {self._input_name: self._batches[self._next - 1]}

    def rewind(self):
        self._next, self._end = 0, len(self._batches)


def _stride(n_batches: int, most: int = 4) -> int:
    """Largest divisor of n_batches that is <= most (onnxruntime requires an exact division)."""
    return max(d for d in range(1, most + 1) if n_batches % d == 0)


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray,
                  method: str = "entropy", exclude_op_types=INT8_DEFAULT_EXCLUDE_OPS, exclude_nodes=(),
                  batch: int = 8) -> dict:
    """Explicit int8 quantisation (Q/DQ, symmetric, per-channel weights) calibrated on `calibration`."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ExportError(f"--calibration {method!r}: expected one of {', '.join(CALIBRATION_METHODS)}")
    model = onnx.load(str(src))
    _check_node_names(model, exclude_nodes, "--exclude-nodes")
    input_name = model.graph.input[0].name
    exclude_op_types = list(exclude_op_types)
    op_types = sorted({n.op_type for n in model.graph.node} - set(exclude_op_types))
    excluded = [n.name for n in model.graph.node if n.op_type in exclude_op_types or n.name in exclude_nodes]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fsr-quant-") as work:
        # quantize_static writes augmented models next to the output; keep them out of --outdir.
        tmp_out = Path(work) / "int8.onnx"
        reader = _Reader(calibration, input_name, batch)
        quantize_static(
            str(src), str(tmp_out), reader, quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types, per_channel=True, activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=list(excluded),
            calibrate_method=CalibrationMethod.Entropy if method == "entropy" else CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "CalibTensorRangeSymmetric": True,
                           "CalibStridedMinMax": _stride(len(reader)),
                           # Biases stay fp32: TensorRT fuses them itself and has no int32 DequantizeLinear.
                           "QuantizeBias": False},
        )
        os.replace(tmp_out, dst)
    seconds = time.perf_counter() - t0
    log.info("int8: calibrated (%s) on %d inputs in %.0f s; %d nodes excluded", method, len(calibration),
             seconds, len(excluded))
    return {"quantizer": _version("onnxruntime", "onnxruntime.quantization.quantize_static"),
            "format": "QDQ", "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel",
            "biases": "fp32",
            "calibration_method": method, "calibration_inputs": int(len(calibration)),
            "calibration_seconds": round(seconds, 1), "excluded_op_types": exclude_op_types,
            "excluded_nodes": excluded}


# --- accuracy gate ------------------------------------------------------------------------------


def accuracy_gate(fp32: "ModelArtifact", converted: "ModelArtifact", precision: "Precision",
                  count: int = GATE_IMAGES) -> dict:
    """Y-PSNR of the converted model vs ground truth and vs the fp32 model (both through the runtime's
    backend); `passed` when it loses at most the precision's tolerance."""
    from .inputs import face_pairs
    from .quality import mean_y_psnr
    from .verify import check_finite, run_onnx

    lr, hr, source = face_pairs(count, "val", fp32.input_hw[0])
    name = fp32.image_output.name
    log.info("accuracy gate: fp32 on %d val faces ...", len(lr))
    t0 = time.perf_counter()
    ref, provider = run_onnx(fp32, lr)
    t1 = time.perf_counter()
    log.info("accuracy gate: fp32 took %.1f s; %s on the same faces (about as long) ...", t1 - t0, precision.name)
    out, _ = run_onnx(converted, lr, int8_kernels="emulated")
    t2 = time.perf_counter()
    check_finite(ref, "the fp32 model")
    check_finite(out, f"the {precision.name} model")
    ref, out = ref[name], out[name]
    fp32_gt, prec_gt = mean_y_psnr(ref, hr), mean_y_psnr(out, hr)
    p = precision.name
    result = {
        "images": source, "metric": "Y-PSNR dB (BT.601 Y, uint8, 8 px border)",
        "fp32_vs_gt_db": round(fp32_gt, 4), f"{p}_vs_gt_db": round(prec_gt, 4),
        "delta_vs_gt_db": round(prec_gt - fp32_gt, 4), f"{p}_vs_fp32_db": round(mean_y_psnr(out, ref), 4),
        "max_abs_error_vs_fp32": float(np.abs(out - ref).max()), "tolerance_db": precision.gate_tolerance_db,
        "runtime": f"runtime onnxruntime backend, {provider}",
        "seconds": {"fp32": round(t1 - t0, 1), p: round(t2 - t1, 1)},
    }
    if precision.needs_calibration and provider == "CPUExecutionProvider":
        result["int8_arithmetic"] = "Q/DQ as float ops (session.disable_quant_qdq): the artifact's own arithmetic"
        result["host_kernels"] = _host_kernels(converted, lr, hr, prec_gt, name)
    result["passed"] = fp32_gt - prec_gt <= precision.gate_tolerance_db
    return result


def _host_kernels(converted: "ModelArtifact", lr: np.ndarray, hr: np.ndarray, emulated_db: float, name: str) -> dict:
    """The same faces through ONNX Runtime's fused int8 kernels on this CPU: reported, never gated."""
    from runtime.cpu_int8 import describe_cpu

    from .quality import mean_y_psnr
    from .verify import run_onnx

    out, _ = run_onnx(converted, lr, int8_kernels="fused")
    fused_db = mean_y_psnr(out[name], hr) if np.isfinite(out[name]).all() else float("nan")
    info = {"cpu": describe_cpu(), "vs_gt_db": round(fused_db, 4), "minus_gate_db": round(fused_db - emulated_db, 4)}
    if not fused_db >= emulated_db - HOST_KERNEL_TOLERANCE_DB:
        log.warning("ONNX Runtime's fused int8 kernels on this CPU (%s) give %.3f dB, %.3f dB below the artifact's "
                    "own arithmetic; the runtime runs int8 graphs emulated on such CPUs", info["cpu"], fused_db,
                    emulated_db - fused_db)
    return info


# --- the precision step of an export ---------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionOptions:
    """What --precision fp16/int8 needs besides the fp32 export (ignored for fp32)."""

    accuracy_gate: str = "fail"  # fail | warn | off
    gate_images: int = 200
    calibration: str = "entropy"  # int8: entropy | max
    calibration_data: str | None = None  # int8: calib.npz from `python -m calibration.collect`
    exclude_op_types: tuple[str, ...] | None = None  # None: the precision's defaults
    exclude_nodes: tuple[str, ...] = ()


def with_model_defaults(options: PrecisionOptions, row: "Precision", io, fp32_path: Path) -> PrecisionOptions:
    """Add the model's own int8 fp32 keep-list (`ModelIO.int8_keep_*`) unless --exclude-op-types was given."""
    if not row.model_keep_lists or options.exclude_op_types is not None:
        return options
    if not (io.int8_keep_ops or io.int8_keep_weights):
        return options
    nodes = nodes_reading(fp32_path, io.int8_keep_weights)
    log.info("int8: this model keeps %s and %d nodes reading %s in fp32",
             ", ".join(io.int8_keep_ops) or "no op types", len(nodes), ", ".join(io.int8_keep_weights) or "no weights")
    return replace(options, exclude_op_types=tuple(row.keep_fp32_ops) + io.int8_keep_ops,
                   exclude_nodes=tuple(options.exclude_nodes) + nodes)


def make_precision_onnx(fp32, out_path: Path, row: "Precision", options: PrecisionOptions,
                        calibration=None) -> tuple[dict, dict]:
    """fp32 artifact -> the precision's ONNX at `out_path`, checked and gated; returns (conversion, accuracy)."""
    from .onnx_export import check_onnx
    from .verify import onnx_artifact

    keep = row.keep_fp32_ops if options.exclude_op_types is None else options.exclude_op_types
    conversion = row.convert(fp32.onnx_path, out_path, keep, options.exclude_nodes, calibration, options.calibration)
    check_onnx(out_path)
    if options.accuracy_gate == "off":
        log.warning("accuracy gate is off: the %s model was not compared with fp32", row.name)
        return conversion, {"skipped": True}
    log.info("accuracy gate: %s vs fp32 on %d val images (runtime onnxruntime backend)", row.name, options.gate_images)
    converted = onnx_artifact(out_path, fp32.inputs, fp32.outputs, fp32.batch)
    gate = accuracy_gate(fp32, converted, row, count=options.gate_images)
    summary = gate_summary(row.name, gate)
    if not gate["passed"]:
        if options.accuracy_gate == "fail":
            raise ExportError(f"accuracy gate failed: {summary}. Nothing was written. Keep more nodes in fp32 "
                              "(--exclude-op-types / --exclude-nodes), try --calibration max|entropy, or pass "
                              "--accuracy-gate warn to publish anyway.")
        log.warning("accuracy gate failed (publishing anyway, --accuracy-gate warn): %s", summary)
    else:
        log.info("accuracy gate passed: %s", summary)
    return conversion, gate


def gate_summary(p: str, gate: dict) -> str:
    text = (f"{p} Y-PSNR vs GT {gate[f'{p}_vs_gt_db']:.3f} dB, fp32 {gate['fp32_vs_gt_db']:.3f} dB "
            f"(delta {gate['delta_vs_gt_db']:+.3f} dB, allowed -{gate['tolerance_db']} dB); "
            f"{p} vs fp32 {gate[f'{p}_vs_fp32_db']:.2f} dB on {gate['images']}")
    host = gate.get("host_kernels")
    if host:  # int8: the gate ran the Q/DQ arithmetic; this CPU's own int8 kernels, for information
        text += f"; ONNX Runtime's fused int8 kernels on this CPU: {host['minus_gate_db']:+.3f} dB vs that"
    return text


# --- the precision table --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Precision:
    """One row of the precision table: how the ONNX file is made and checked, and what TensorRT needs.

    Args:
        name: the CLI/manifest name.
        convert: (fp32 onnx, out path, keep-fp32 op types, keep-fp32 node names, calibration, method) -> info
            for the manifest; None for fp32 (the exported graph itself).
        keep_fp32_ops: op types left in fp32 by default (measured reasons in docs/precision.md).
        gate_tolerance_db: Y-PSNR (vs ground truth) the model may lose against fp32; None for fp32.
        legacy_trt_flags: BuilderFlag names for TensorRT's weakly typed path (TensorRT < 11).
        dla: whether Jetson's DLA can run it.
        needs_calibration: whether a calibration set is read.
        model_keep_lists: whether the model's own keep-fp32 lists (`ModelIO.int8_keep_*`) apply.
    """

    name: str
    convert: Callable | None
    keep_fp32_ops: tuple[str, ...]
    gate_tolerance_db: float | None
    legacy_trt_flags: tuple[str, ...]
    dla: bool
    needs_calibration: bool = False
    model_keep_lists: bool = False


def _to_fp16(src, dst, keep_op_types, keep_nodes, calibration, method) -> dict:
    return convert_fp16(src, dst, keep_op_types=keep_op_types, keep_nodes=keep_nodes)


def _to_int8(src, dst, keep_op_types, keep_nodes, calibration, method) -> dict:
    data, description = calibration
    info = quantize_int8(src, dst, data["lr"], method=method, exclude_op_types=keep_op_types, exclude_nodes=keep_nodes)
    info["calibration_set"] = description
    return info


PRECISIONS: dict[str, Precision] = {p.name: p for p in (
    Precision("fp32", None, (), None, (), dla=False),
    Precision("fp16", _to_fp16, FP16_KEEP_FP32_OPS, 0.05, ("FP16",), dla=True),
    Precision("int8", _to_int8, INT8_DEFAULT_EXCLUDE_OPS, 0.3, ("FP16", "INT8"), dla=True, needs_calibration=True,
              model_keep_lists=True),
)}


def get_precision(name: str) -> Precision:
    row = PRECISIONS.get(str(name).lower())
    if row is None:
        raise ExportError(f"--precision {name!r}: expected one of {', '.join(PRECISIONS)}")
    return row


# --- helpers ------------------------------------------------------------------------------------


def nodes_reading(onnx_path: str | os.PathLike, weight_patterns) -> tuple[str, ...]:
    """Names of the nodes that take a weight (initializer) whose name matches one of the fnmatch patterns."""
    from fnmatch import fnmatchcase

    import onnx

    if not weight_patterns:
        return ()
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    weights = {w.name for w in graph.initializer if any(fnmatchcase(w.name, p) for p in weight_patterns)}
    return tuple(n.name for n in graph.node if weights.intersection(n.input))


def _check_node_names(model, names, what: str) -> None:
    missing = sorted(set(names) - {n.name for n in model.graph.node})
    if missing:
        sample = ", ".join(n.name for n in model.graph.node[:5])
        raise ExportError(f"{what}: no node named {', '.join(missing)} in the graph; node names look like "
                          f"{sample}, ... (list them with onnx.load(path).graph.node)")


def _version(package: str, api: str) -> str:
    from importlib import metadata

    try:
        return f"{api} ({package} {metadata.version(package)})"
    except metadata.PackageNotFoundError:
        return api
