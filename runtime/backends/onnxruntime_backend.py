"""ONNX Runtime backend: TensorRT -> CUDA -> CPU execution providers, whichever this machine can use.

On a GPU provider, inputs and outputs go through an IO binding (one explicit host->device copy per input,
outputs allocated on the device and copied back once).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifact import ModelArtifact
from ..errors import BackendError, ModelArtifactError
from .base import Backend, check_graph_matches
from .cuda_probe import cuda_device_count

log = logging.getLogger(__name__)

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
GPU_PROVIDERS = frozenset(PROVIDER_PREFERENCE[:2])


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendError("the onnxruntime backend needs ONNX Runtime: pip install onnxruntime-gpu "
                           "(it includes the CPU provider).") from err
    return onnxruntime


def choose_providers(available: list[str], gpu_count: int) -> list[str]:
    """Preferred providers that are installed and usable: GPU ones only when a GPU exists."""
    return [p for p in PROVIDER_PREFERENCE if p in available and (p not in GPU_PROVIDERS or gpu_count > 0)]


def _open_session(path: Path, providers: list[str]):
    ort = _import_onnxruntime()
    if not Path(path).is_file():
        raise ModelArtifactError(f"ONNX model {path} does not exist; keep it beside its manifest or re-export it.")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; provider fallbacks are logged by us
    # Idle worker threads would otherwise spin after each run and steal the CPU from detection/compose.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # ONNX Runtime raises its own exception types for bad files
        raise ModelArtifactError(f"ONNX Runtime cannot load {path}: {str(err).strip()[:800]}. Expected a valid "
                                 "ONNX model written by `python -m export.build`; re-export it.") from err


def open_cpu_session(path: Path):
    """A CPU-only session (used to read a graph's I/O when there is no manifest)."""
    return _open_session(path, ["CPUExecutionProvider"])


class OnnxRuntimeBackend(Backend):
    """Runs the artifact's ONNX file with ONNX Runtime.

    Args:
        artifact: the loaded artifact; needs `onnx_path`.
        providers: execution providers to try, best first (default: `choose_providers`).
    """

    name = "onnxruntime"

    def __init__(self, artifact: ModelArtifact, providers: list[str] | None = None):
        super().__init__(artifact)
        if artifact.onnx_path is None:
            raise ModelArtifactError(f"{artifact.path} names no ONNX file; the onnxruntime backend needs one "
                                     "(pass the .onnx or a manifest with an 'onnx' entry).")
        self.requested_providers = providers
        self.session = None
        self.on_gpu = False
        self._output_names: list[str] = []

    def _activate(self) -> None:
        ort = _import_onnxruntime()
        providers = self.requested_providers or choose_providers(ort.get_available_providers(), cuda_device_count())
        self.session = _open_session(self.artifact.onnx_path, providers)
        active = self.session.get_providers()
        if active[0] != providers[0]:
            log.warning("onnxruntime: %s is not usable here; running on %s", providers[0], active[0])
        log.info("onnxruntime %s: providers %s", ort.__version__, active)
        self.on_gpu = active[0] in GPU_PROVIDERS
        self._output_names = [o.name for o in self.session.get_outputs()]
        check_graph_matches(self.artifact, [i.name for i in self.session.get_inputs()], self._output_names)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = self._output_names
        if self.on_gpu:
            return dict(zip(names, self._run_bound(feeds, names)))
        return dict(zip(names, self.session.run(names, feeds)))

    def _run_bound(self, feeds: dict[str, np.ndarray], names: list[str]) -> list[np.ndarray]:
        ort = _import_onnxruntime()
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), "cuda", 0))
        for name in names:
            binding.bind_output(name, "cuda", 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def _deactivate(self) -> None:
        self.session = None

