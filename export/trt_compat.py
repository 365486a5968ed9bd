"""Offline TensorRT compatibility check of an ONNX graph (no TensorRT needed).

Every node's op type and the attributes that matter to TensorRT's ONNX parser are checked against the
support tables of the releases in `export.trt_support` (TensorRT 10.3 on JetPack 6, the 10.x release of
JetPack 7, TensorRT 11). The result is stored in the manifest (`checks.tensorrt_compat`) and printed; a graph
that a target release cannot parse is refused, naming the node and the op.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import ExportError
from .trt_support import RELEASES, RESIZE_COORD_MODES, RESIZE_MODES, ParserRelease

# Which input holds `axes` (or CumSum's `axis`); a release's `const_axes_ops` says where it must be constant.
_AXES_INPUT = {"Squeeze": 1, "Unsqueeze": 1, "Slice": 3, "Pad": 3, "CumSum": 1}


def _graph_facts(model):
    """(initializer names, node-output -> producing op type, initializer name -> array) of the main graph."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    return initializers, producers, numpy_helper


def _is_constant(name: str, initializers: dict, producers: dict) -> bool:
    return name in initializers or producers.get(name) == "Constant"


def _attribute(node, name: str, default=None):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            value = helper.get_attribute_value(attr)
            return value.decode() if isinstance(value, bytes) else value
    return default


def node_problems(node, release: ParserRelease, initializers: dict, producers: dict, numpy_helper) -> list[str]:
    """What keeps `release`'s parser from taking this node (empty when it is fine)."""
    where = f"node {node.name or '(unnamed)'!r} ({node.op_type})"
    if node.domain not in ("", "ai.onnx"):
        return [f"{where}: custom domain {node.domain!r} needs a TensorRT plugin"]
    if node.op_type not in release.supported_ops:
        return [f"{where}: op not supported by the {release.name} ONNX parser"]
    problems = []
    axes_index = 1 if node.op_type.startswith("Reduce") else _AXES_INPUT.get(node.op_type)
    if node.op_type in release.const_axes_ops and axes_index is not None and len(node.input) > axes_index \
            and node.input[axes_index] and not _is_constant(node.input[axes_index], initializers, producers):
        problems.append(f"{where}: input {axes_index} (axes) is computed at run time; the parser needs an initializer")
    if node.op_type == "Resize":
        problems += _resize_problems(node, where)
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        problems += _qdq_problems(node, where, initializers, numpy_helper)
    return problems


def _resize_problems(node, where: str) -> list[str]:
    problems = []
    mode = _attribute(node, "mode", "nearest")
    if mode not in RESIZE_MODES:
        problems.append(f"{where}: mode {mode!r} (documented: {', '.join(sorted(RESIZE_MODES))})")
    transform = _attribute(node, "coordinate_transformation_mode", "half_pixel")
    if transform not in RESIZE_COORD_MODES:
        problems.append(f"{where}: coordinate_transformation_mode {transform!r} is not supported")
    if _attribute(node, "antialias", 0):
        problems.append(f"{where}: antialias=1 is not supported (the parser would ignore it: results would differ)")
    return problems


def _qdq_problems(node, where: str, initializers: dict, numpy_helper) -> list[str]:
    problems = []
    if len(node.input) > 2 and node.input[2]:
        zero_point = initializers.get(node.input[2])
        if zero_point is None:
            problems.append(f"{where}: zero point is not an initializer")
        elif np.any(numpy_helper.to_array(zero_point) != 0):
            problems.append(f"{where}: zero point is not 0 (TensorRT quantizes symmetrically)")
    if node.op_type == "DequantizeLinear" and node.input[0] in initializers:
        if numpy_helper.to_array(initializers[node.input[0]]).dtype == np.int32:
            problems.append(f"{where}: int32 input (a quantized bias) cannot be dequantized by TensorRT")
    return problems


def check_release(model, release: ParserRelease) -> dict:
    initializers, producers, numpy_helper = _graph_facts(model)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    problems = []
    if not release.min_opset <= opset <= release.max_opset:
        problems.append(f"opset {opset} is outside the parser's range {release.min_opset}..{release.max_opset}")
    for node in model.graph.node:
        problems += node_problems(node, release, initializers, producers, numpy_helper)
    return {"release": release.name, "source": release.source, "opset": opset, "passed": not problems,
            "problems": problems}


def check_targets(targets: tuple[str, ...] | None) -> tuple[str, ...]:
    """The release keys to check (default: all); ExportError naming the known ones for an unknown key."""
    targets = tuple(RELEASES) if not targets else tuple(targets)
    unknown = [t for t in targets if t not in RELEASES]
    if unknown:
        raise ExportError(f"--trt-targets {','.join(unknown)}: unknown; expected some of {', '.join(RELEASES)}")
    return targets


def check_tensorrt_compat(onnx_path: str | Path, targets: tuple[str, ...] | None = None) -> dict:
    """Check the graph against every release in `targets` (default: all); ExportError if any cannot parse it."""
    import onnx

    targets = check_targets(targets)
    model = onnx.load(str(onnx_path))
    op_types = sorted({node.op_type for node in model.graph.node})
    results = {key: check_release(model, RELEASES[key]) for key in targets}
    failed = {key: r for key, r in results.items() if not r["passed"]}
    if failed:
        lines = [f"{r['release']}: " + "; ".join(r["problems"][:10]) for r in failed.values()]
        raise ExportError("the graph cannot be compiled by TensorRT: " + " | ".join(lines) +
                          ". Keep the op out of the model, or narrow --trt-targets to releases that support it. "
                          "Nothing was written.")
    return {"passed": True, "op_types": op_types, "releases": results}


def compat_summary(check: dict) -> str:
    releases = check.get("releases", {})
    names = ", ".join(r["release"] for r in releases.values())
    return f"{'ok' if check.get('passed') else 'FAILED'} for {names} ({len(check.get('op_types', []))} op types)"
