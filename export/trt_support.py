"""TensorRT ONNX-parser support tables (facts transcribed from onnx-tensorrt docs/operators.md; sources below).

Data only (stdlib): which default-domain ONNX ops each TensorRT ONNX parser marks supported ("Y"), its opset
range, the restrictions that matter to CNN super-resolution graphs (reworded, not copied), and API/DLA facts.

Opset range, as each operators.md states it in its first line:
  - onnx-tensorrt 10.1-GA table (basis of "10.3"): "TensorRT 10.0 supports operators in the inclusive range of
    opset 9 to opset 20" (the header was not bumped for 10.1; the 10.3-GA table itself was not readable offline).
  - 10.14 table (basis of "10.13"): "TensorRT 10.14 supports ... opset 9 to opset 24".
  - 10.16 table ("10.x-jetpack7"): "TensorRT 10.16 supports ... opset 9 to opset 24".
  - 11.1 table ("11"): "TensorRT 11.1 supports ... opset 9 to opset 24". (NVIDIA's 11.x "ONNX Opset Guide" page
    says ONNX 1.20 / max opset 25; the table we transcribe says 24, and 24 is what we use.)

Where the commits come from: the parsers/onnx submodule pointer of NVIDIA/TensorRT's release branches
(release/10.3 -> 62bdde2, release/10.13 -> 346bdca, release/10.14 -> c727277, release/10.16 -> 6bde659,
release/11.1 and tag v11.1 -> 7c51a63). Tables read: 96e7811 (local onnx-tensorrt mirror, branch 10.1-GA),
c727277, 6bde659, 7c51a63 (stored copies of onnx/onnx-tensorrt docs/operators.md).

JetPack -> TensorRT: JetPack 6.1/6.2 ship TensorRT 10.3 (CUDA 12.6; pytorch/TensorRT "Torch-TensorRT in JetPack"
docs). JetPack 7.0/7.1 (Jetson Linux 38.x, Thor only) ship TensorRT 10.13.3 (CUDA 13.0). JetPack 7.2 (Jetson Linux
39.2, adds Orin to JetPack 7) ships TensorRT 10.16.2 (CUDA 13.2): TensorRT 10.16.1 release notes say its SBSA build
adds Orin iGPU support "bundled in an upcoming JetPack 7.x", without Orin DLA. The 11.2-11.4.0 docs say JetPack is not
supported; 11.4.1 supports JetPack >= 7.2.2 (AGX Orin and Thor) and says Orin on JetPack 6.x must stay on 10.x.

TensorRT 11 (release notes / 10.x->11.x migration guide): weak typing and implicit INT8 were removed in 11.0 --
BuilderFlag.FP16/BF16/INT8/FP8/INT4/FP4, OBEY/PREFER_PRECISION_CONSTRAINTS, IBuilderConfig.int8_calibrator and the
calibration-profile / quantization-flag APIs are gone (calibrators deprecated since 10.1, weak-typing APIs since
10.12); every network is strongly typed, precision comes from tensor types or Q/DQ nodes. DLA: absent in TensorRT
11.0-11.3 (those docs: "TensorRT 10.7 was the last 10.x release that supported DLA"); 11.4.0 only on Windows on ARM
(beta); 11.4.1 restores it on Jetson AGX Orin with JetPack >= 7.2.2 (Thor has no DLA at all).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ParserRelease:
    name: str                    # e.g. "TensorRT 10.3 (JetPack 6.1/6.2)"
    version: tuple[int, int]
    source: str                  # table + commit it was transcribed from (and what was derived)
    min_opset: int
    max_opset: int               # newest opset the parser's operators.md documents
    supported_ops: frozenset[str]  # rows marked "Y" for the default ONNX domain
    notes: dict[str, str]        # op type -> restriction (own words), CNN/SR-relevant ops only
    has_legacy_precision_flags: bool  # BuilderFlag.FP16/INT8 + IInt8Calibrator usable from Python
    has_dla: bool                # DLA usable on the Jetson this release ships for
    const_axes_ops: frozenset[str] = field(default_factory=frozenset)  # axes/axis input must be build-time constant


# Rows marked "Y" in the onnx-tensorrt 10.1-GA table (commit 96e7811): 150 ops.
_OPS_10_1 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization
Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear
RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile
TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())
# Changes later tables make to the "Y" set (no op ever went from Y back to N in these tables):
_WINDOWS_STFT = frozenset({"BlackmanWindow", "HammingWindow", "HannWindow", "STFT"})  # Y by 10.14 (added 10.4/10.5)
_OPS_10_14 = _OPS_10_1 | _WINDOWS_STFT | {"Attention"}                           # 10.14 table (c727277): 155
_OPS_10_16 = _OPS_10_14 | {"RMSNormalization", "RotaryEmbedding", "TensorScatter"}  # 10.15/10.16 tables: 158
_OPS_11_1 = _OPS_10_16 | {"Swish"}                                                  # 11.1 table (7c51a63): 159

_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSum", "ReduceSumSquare")

# Resize, identical in every table here (10.1 .. 11.1).
# "cubic" is not listed in any table (the 10.1 importer source does map it, over the 2 innermost dims only).
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_COORD_MODES = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                                "align_corners"})  # no half_pixel_symmetric, no tf_crop_and_resize
RESIZE_NEAREST_MODES = frozenset({"floor", "ceil", "round_prefer_floor", "round_prefer_ceil"})

_NOTES_COMMON = {
    "Resize": "fp32/fp16/bf16 data. Modes: nearest, linear (cubic not documented). Coordinate transforms: half_pixel, "
              "pytorch_half_pixel, tf_half_pixel_for_nn, asymmetric, align_corners. Nearest rounding: floor, ceil, "
              "round_prefer_floor, round_prefer_ceil. keep_aspect_ratio_policy must be stretch. A tensor "
              "(non-constant) scales input needs axes covering every dim in order. antialias=1 is not supported.",
    "Conv": "fp32/fp16/bf16; no extra restriction in the 10.x/11.x tables (int8 only via Q/DQ).",
    "ConvTranspose": "fp32/fp16/bf16; no extra restriction in the 10.x/11.x tables (int8 only via Q/DQ).",
    "QuantizeLinear": "input fp32/fp16/bf16; zero point must be 0 (symmetric only). Scale must be positive and of "
                      "static shape (importer source).",
    "ArgMax": "fp32/fp16/bf16/int32/int64; no restriction listed.",
    "Softmax": "fp32/fp16/bf16; no restriction listed.",
    "Cast": "to/from fp32, fp16, bf16, int32, int64, uint8, bool (no int8/fp8 targets); uint8 only at network I/O.",
    "Clip": "fp32/fp16/bf16 only (no integer Clip).",
    "GridSample": "fp32/fp16 only; input must be 4-D.",
    "DepthToSpace": "fp32/fp16/bf16/int32/int64; no restriction listed (PixelShuffle exports to this).",
    "SpaceToDepth": "fp32/fp16/bf16/int32/int64; no restriction listed.",
    "TopK": "sorted must be 1 and K below 3840.",
    "MaxPool": "2-D or 3-D only; Indices output unsupported; dilations empty or all 1.",
    "AveragePool": "2-D or 3-D only; dilations empty or all 1.",
    "InstanceNormalization": "fp32/fp16/bf16; no restriction listed.",
    "PRelu": "fp32/fp16/bf16; no restriction listed.",
    "Upsample": "fp32/fp16/bf16; deprecated ONNX op, no restriction listed.",
    "Pow": "fp32/fp16/bf16 in 10.1; int32/int64 too from the 10.14 table on (integer base/exponent added 10.8/10.12).",
}
_REDUCE_NOTE = "fp32/fp16/bf16/int32/int64; axes must be an initializer (constant) tensor."


def _notes(**overrides: str) -> dict[str, str]:
    notes = dict(_NOTES_COMMON)
    notes.update({op: _REDUCE_NOTE for op in _REDUCE_OPS})
    notes.update(overrides)
    return notes


_NOTES_10_3 = _notes(
    DequantizeLinear="input int8, fp8 or int4 only (no int32, no uint8, no fp4): a DequantizeLinear of an int32 "
                     "bias is not supported. Zero point must be 0.",
    Slice="10.1 table: axes must be an initializer; onnx-tensorrt Changelog: tensor axes accepted from 10.3 on.",
    Pad="axes must be an initializer (tensor axes only from 10.4 per the Changelog).",
    Squeeze="axes must be an initializer (dynamic axes only from 10.7 per the Changelog).",
    Unsqueeze="axes must be a constant tensor (dynamic axes only from 10.7 per the Changelog).",
    CumSum="axis must be an initializer.",
    Einsum="fp32/fp16/bf16; ellipsis, diagonal and broadcasting only supported from 10.12 (Changelog).",
)
_NOTES_10_X = _notes(
    DequantizeLinear="input int8, fp8, fp4 or int4 only (no int32, no uint8): a DequantizeLinear of an int32 bias "
                     "is not supported. Zero point must be 0 (DLA-only parser flag allows uint8/asymmetric, 10.11+).",
    Slice="no restriction (tensor axes accepted).",
    Pad="no restriction listed (tensor axes accepted since 10.4).",
    Squeeze="axes must be resolvable to a constant at build time (shape arithmetic that folds is fine).",
    Unsqueeze="axes must be resolvable to a constant at build time (shape arithmetic that folds is fine).",
    CumSum="axis must be a build-time constant.",
    Einsum="fp32/fp16/bf16; no restriction listed.",
)

_TABLE_AXES_10_3 = frozenset(_REDUCE_OPS) | {"Pad", "Squeeze", "Unsqueeze", "CumSum"}
_TABLE_AXES_10_X = frozenset(_REDUCE_OPS) | {"Squeeze", "Unsqueeze", "CumSum"}

RELEASES: dict[str, ParserRelease] = {
    "10.3": ParserRelease(
        name="TensorRT 10.3 (JetPack 6.1/6.2)", version=(10, 3),
        source="DERIVED: onnx-tensorrt 10.1-GA docs/operators.md (commit 96e7811) + onnx-tensorrt Changelog entries "
               "for 10.2/10.3 (no op added or removed; Slice gained tensor axes). The release/10.3-GA table "
               "(commit 62bdde2) was not available offline.",
        min_opset=9, max_opset=20, supported_ops=_OPS_10_1, notes=_NOTES_10_3,
        has_legacy_precision_flags=True, has_dla=True, const_axes_ops=_TABLE_AXES_10_3),
    "10.x-jetpack7": ParserRelease(
        name="TensorRT 10.16 (JetPack 7.2; JetPack 7.0/7.1 ship 10.13)", version=(10, 16),
        source="onnx-tensorrt docs/operators.md at commit 6bde659 (parsers/onnx of NVIDIA/TensorRT release/10.16)",
        min_opset=9, max_opset=24, supported_ops=_OPS_10_16, notes=_NOTES_10_X,
        has_legacy_precision_flags=True,  # present but deprecated (weak typing since 10.12, calibrators since 10.1)
        has_dla=False,  # 10.16.1 notes: Orin DLA not supported in the SBSA/JetPack 7 build; Thor has no DLA
        const_axes_ops=_TABLE_AXES_10_X),
    "11": ParserRelease(
        name="TensorRT 11.1", version=(11, 1),
        source="onnx-tensorrt docs/operators.md at commit 7c51a63 (parsers/onnx of NVIDIA/TensorRT release/11.1, tag "
               "v11.1); newest table available offline (onnx-tensorrt has released up to 11.3, not readable here)",
        min_opset=9, max_opset=24, supported_ops=_OPS_11_1, notes=_NOTES_10_X,
        has_legacy_precision_flags=False,  # removed in 11.0
        has_dla=False,  # none in 11.0-11.3; back in 11.4.1 on AGX Orin with JetPack >= 7.2.2 only
        const_axes_ops=_TABLE_AXES_10_X),
}

# Not in RELEASES (kept out of the default compat check): the parser JetPack 7.0/7.1 ship, Thor only.
JETPACK_7_0_RELEASE = ParserRelease(
    name="TensorRT 10.13 (JetPack 7.0/7.1, Thor only)", version=(10, 13),
    source="DERIVED: onnx-tensorrt 10.14 docs/operators.md (commit c727277) minus Attention (added in 10.14 per the "
           "Changelog); the 10.13 table (commit 346bdca) was not available offline",
    min_opset=9, max_opset=24,  # value of the 10.14 table; the 10.13 header was not seen
    supported_ops=_OPS_10_14 - {"Attention"}, notes=_NOTES_10_X,
    has_legacy_precision_flags=True, has_dla=False, const_axes_ops=_TABLE_AXES_10_X)


def release(key: str) -> ParserRelease:
    """RELEASES[key] with a readable error."""
    if key not in RELEASES:
        raise KeyError(f"unknown TensorRT release {key!r}; known: {', '.join(RELEASES)}")
    return RELEASES[key]


def unsupported_ops(op_types, key: str) -> list[str]:
    """The default-domain op types in `op_types` that release `key`'s parser does not mark supported."""
    supported = release(key).supported_ops
    return sorted({op for op in op_types if op not in supported})


def release_for(version: tuple[int, int]) -> ParserRelease | None:
    """The newest table at or below an installed TensorRT (major, minor); None for one older than all tables."""
    tables = sorted([*RELEASES.values(), JETPACK_7_0_RELEASE], key=lambda r: r.version)
    older = [r for r in tables if r.version <= tuple(version)]
    return older[-1] if older else None
