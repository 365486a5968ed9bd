"""Which int8 arithmetic ONNX Runtime's CPU provider should use for a Q/DQ graph on this CPU.

ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into integer kernels. On x86 CPUs without VNNI
(AVX2 only: many AMD EPYC and older Intel parts) its u8s8 kernels multiply with `vpmaddubsw`, which saturates
the sum of two products at 16 bits; a face model's int8 graph then loses up to 2 dB that the artifact itself
does not lose (TensorRT and VNNI CPUs accumulate in 32 bits). Running the Q/DQ nodes as float operations
(`session.disable_quant_qdq`) computes exactly the quantized model: every tensor is rounded to its int8 grid,
products are summed in fp32. It is slower than the fused kernels, and correct on every CPU.

    "fused":    ONNX Runtime's integer kernels (its default)
    "emulated": Q/DQ as float ops (the arithmetic TensorRT's explicit quantization defines)
    "auto":     fused where the CPU accumulates int8 products in 32 bits, emulated elsewhere
"""
from __future__ import annotations

import platform
from functools import lru_cache
from pathlib import Path

INT8_KERNELS = ("auto", "fused", "emulated")
# CPU flags (Linux /proc/cpuinfo names) of instructions that sum int8 products into 32-bit lanes:
# x86 VNNI/AMX, and Arm's dot product (sdot/udot, "asimddp"; Jetson Orin's Cortex-A78AE has it).
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
ARM_DOT_FLAGS = frozenset({"asimddp"})
EMULATE_QDQ = {"session.disable_quant_qdq": "1"}


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where that file does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def fused_int8_is_exact(machine: str | None = None, flags: frozenset[str] | None = None) -> bool:
    """True where ONNX Runtime's fused int8 kernels are known to accumulate in 32 bits: x86 with VNNI/AMX, Arm
    with the dot-product instructions. Anything else, or a CPU whose flags cannot be read, gets the emulation:
    slower, never wrong."""
    machine = (machine or platform.machine()).lower()
    flags = cpu_flags() if flags is None else flags
    if machine in ("aarch64", "arm64"):
        return bool(ARM_DOT_FLAGS & flags)
    return bool(VNNI_FLAGS & flags)


def qdq_session_config(kernels: str = "auto") -> dict[str, str]:
    """ONNX Runtime session config entries for int8 graphs on the CPU provider ({} keeps its defaults).

    Harmless for graphs without Q/DQ nodes: the entry only switches off the Q/DQ fusions."""
    if kernels not in INT8_KERNELS:
        raise ValueError(f"int8 kernels {kernels!r}: expected one of {', '.join(INT8_KERNELS)}")
    if kernels == "emulated" or (kernels == "auto" and not fused_int8_is_exact()):
        return dict(EMULATE_QDQ)
    return {}


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_cpu() -> str:
    """One line naming the CPU and whether it has VNNI, for manifests and logs."""
    dot = sorted((VNNI_FLAGS | ARM_DOT_FLAGS) & cpu_flags())
    return f"{cpu_name()} ({'int8 dot product: ' + ', '.join(dot) if dot else 'no int8 dot product (VNNI)'})"
