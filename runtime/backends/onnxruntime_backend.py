"""ONNX Runtime backend: TensorRT -> CUDA -> CPU execution providers, whichever this machine can use.

On a GPU provider, inputs and outputs go through an IO binding (one explicit host->device copy per input,
outputs allocated on the device and copied back once). On the CPU provider, int8 (Q/DQ) graphs run with the
arithmetic that is exact on this CPU (`runtime.cpu_int8`), and an fp16 graph gets a warning: the CPU
provider is no faster on fp16 graphs and on many CPUs much slower (it converts to fp32 and back).
"""
from __future__ import annotations

import logging

import numpy as np

from ..artifact import ModelArtifact
from ..cpu_int8 import describe_cpu, qdq_session_config
from ..errors import ModelArtifactError
from ..onnx_io import import_onnxruntime, open_session, session_io
from .base import Backend, check_graph_matches
from .cuda_probe import cuda_device_count

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset(PROVIDER_PREFERENCE[:2])
CPU_PROVIDER = PROVIDER_PREFERENCE[2]
_warned: set[str] = set()  # one warning per artifact and kind in a process


def _warn_once(key: str, message: str, *args) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def choose_providers(available: list[str], gpu_count: int) -> list[str]:
    """Preferred providers that are installed and usable: GPU ones only when a GPU exists."""
    return [p for p in PROVIDER_PREFERENCE if p in available and (p not in GPU_PROVIDERS or gpu_count > 0)]


class OnnxRuntimeBackend(Backend):
    """Runs the artifact's ONNX file with ONNX Runtime.

    Args:
        artifact: the loaded artifact; needs `onnx_path`.
        providers: execution providers to try, best first (default: `choose_providers`).
        intra_op_threads: ONNX Runtime's intra-op thread count (default: its own choice).
        int8_kernels: CPU provider only: "auto" (exact on this CPU; default), "fused" (ONNX Runtime's integer
            kernels) or "emulated" (Q/DQ as float ops, what the export's accuracy gate measures).
    """

    name = "onnxruntime"
    concurrent_infer = True  # InferenceSession.run is thread-safe; IO bindings are made per call

    def __init__(self, artifact: ModelArtifact, providers: list[str] | None = None,
                 intra_op_threads: int | None = None, int8_kernels: str = "auto"):
        super().__init__(artifact)
        self.intra_op_threads = intra_op_threads
        self.cpu_config = qdq_session_config(int8_kernels)
        if artifact.onnx_path is None:
            raise ModelArtifactError(f"{artifact.path} names no ONNX file; the onnxruntime backend needs one "
                                     "(pass the .onnx or a manifest with an 'onnx' entry).")
        self.requested_providers = providers
        self.session = None
        self.on_gpu = False
        self._output_names: list[str] = []

    def _activate(self) -> None:
        ort = import_onnxruntime()
        providers = self.requested_providers or choose_providers(ort.get_available_providers(), cuda_device_count())
        on_cpu = providers[0] == CPU_PROVIDER
        self.session = open_session(self.artifact.onnx_path, providers, self.intra_op_threads,
                                    self.cpu_config if on_cpu else None)
        active = self.session.get_providers()
        if active[0] != providers[0]:
            log.warning("onnxruntime: %s is not usable here; running on %s", providers[0], active[0])
            if active[0] == CPU_PROVIDER and self.cpu_config:  # fell back to the CPU: its int8 settings apply
                self.session = open_session(self.artifact.onnx_path, active, self.intra_op_threads, self.cpu_config)
        log.info("onnxruntime %s: providers %s", ort.__version__, active)
        self.on_gpu = active[0] in GPU_PROVIDERS
        if not self.on_gpu:
            self._explain_cpu_precision()
        graph_inputs, graph_outputs = session_io(self.session)
        check_graph_matches(self.artifact, graph_inputs, graph_outputs)
        self._output_names = [spec.name for spec in graph_outputs]

    def _explain_cpu_precision(self) -> None:
        manifest = self.artifact.manifest
        precision = manifest.precision if manifest is not None else None
        path = str(self.artifact.path)
        if precision == "int8" and self.cpu_config:
            _warn_once(f"int8:{path}", "onnxruntime CPU: %s has no int8 dot-product instructions, so ONNX "
                       "Runtime's fused int8 kernels would lose accuracy here; %s runs its Q/DQ nodes as float "
                       "ops instead (exact; about 1.3x the fp32 graph's time, docs/precision.md)", describe_cpu(), path)
        elif precision == "fp16":
            _warn_once(f"fp16:{path}", "onnxruntime CPU: %s is an fp16 artifact; the CPU provider runs fp16 graphs "
                       "no faster than fp32 and often much slower (docs/precision.md). On a CPU use the fp32 or "
                       "int8 export; fp16 is for GPUs (CUDA/TensorRT).", path)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._output_names
        if self.on_gpu:
            return dict(zip(names, self._run_bound(feeds, names)))
        return dict(zip(names, self.session.run(names, feeds)))

    def _run_bound(self, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        ort = import_onnxruntime()
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0))
        for name in names:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _deactivate(self) -> None:
        self.session = None

