"""TensorRT backend (TensorRT 10 Python API): runs the artifact's `.engine`.

Before deserializing, each engine's manifest is checked: the file's sha256 against the one recorded at build
time, and the TensorRT release and GPU against the installed ones (`check_engine_compat`), because an engine
only runs with the TensorRT version and GPU architecture it was built for. When an artifact has several
engines (built on different machines), the first one that fits this machine is used. Activation allocates pinned host and device buffers once, at the optimisation profile's maximum
batch, and binds their addresses once; `infer` sets the batch with `set_input_shape` (only when it
changes), copies in, runs `execute_async_v3` and copies out on one stream, and synchronises before
returning (so `last_latency_ms` covers the whole round trip).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..artifact import EngineFile, ModelArtifact
from ..files import sha256_of
from ..contract import TensorRTBuild, TensorSpec
from ..errors import BackendError, ModelArtifactError
from .base import Backend, check_graph_matches

log = logging.getLogger(__name__)

PROFILE = 0  # the exporter builds one optimisation profile


def _import_tensorrt():
    try:
        import tensorrt
    except ImportError as err:
        raise BackendError("the tensorrt backend needs TensorRT's Python package: pip install -e '.[tensorrt]' "
                           "(on Jetson it comes with JetPack), or use --backend onnxruntime.") from err
    return tensorrt


def _version_key(version: str) -> tuple[int, ...]:
    """'10.3.0.26' -> (10, 3, 0): builds of one major.minor.patch release share engines."""
    parts = []
    for part in str(version).split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_engine_compat(build: TensorRTBuild, trt_version: str, gpu_name: str, compute_capability: str,
                        engine: str) -> None:
    """Raise ModelArtifactError unless an engine built as `build` describes can run here.

    Rules: the TensorRT release (major.minor.patch) must match, and so must the GPU's compute capability
    when the manifest records it. A different GPU name with the same compute capability is only logged.
    """
    if _version_key(build.version) != _version_key(trt_version):
        raise ModelArtifactError(f"{engine} was built with TensorRT {build.version}, but TensorRT {trt_version} is "
                                 "installed; engines only run on the release that built them. Rebuild the engine "
                                 "on this machine (`python -m export.tensorrt_build NAME.json`), or install the "
                                 "matching TensorRT.")
    if build.compute_capability is not None and str(build.compute_capability) != str(compute_capability):
        raise ModelArtifactError(f"{engine} was built for a GPU of compute capability {build.compute_capability} "
                                 f"({build.gpu or 'unknown GPU'}), but this GPU ({gpu_name}) has "
                                 f"{compute_capability}. Rebuild the engine on this machine.")
    if build.gpu and build.gpu != gpu_name:
        log.warning("%s was built on %s, running on %s (same compute capability %s)",
                    engine, build.gpu, gpu_name, compute_capability)


def check_engine_file(engine: EngineFile) -> None:
    """The engine file must be the one its manifest describes (not truncated, replaced or corrupted)."""
    if sha256_of(engine.path) != engine.manifest.engine_sha256:
        raise ModelArtifactError(f"{engine.path} does not match the sha256 in its manifest: the file is corrupt or "
                                 "was replaced after the build. Rebuild the engine.")


def choose_engine(engines: tuple[EngineFile, ...], trt_version: str, gpu_name: str,
                  compute_capability: str) -> EngineFile:
    """The first engine that passes the file and compatibility checks; else one error listing every reason."""
    reasons = []
    for engine in engines:
        try:
            check_engine_compat(engine.manifest.tensorrt, trt_version, gpu_name, compute_capability, str(engine.path))
            check_engine_file(engine)
            return engine
        except ModelArtifactError as err:
            reasons.append(str(err))
    if not reasons:
        raise ModelArtifactError("no TensorRT engine was found for this artifact; build one with "
                                 "`python -m export.tensorrt_build NAME.json`.")
    raise ModelArtifactError(" | ".join(reasons))


def _trt_ok(ok: bool, what: str) -> None:
    """TensorRT setters and execute report failure by returning False."""
    if not ok:
        raise BackendError(f"TensorRT {what} failed (see the TensorRT log above).")


@dataclass
class _Binding:
    """One I/O tensor: its pinned host buffer and device buffer, both sized for the max batch."""

    name: str
    is_input: bool
    host: np.ndarray
    device: int


class TensorRTBackend(Backend):
    """Runs a TensorRT engine on GPU `device`. Needs TensorRT and cuda-python (or pycuda)."""

    name = "tensorrt"

    def __init__(self, artifact: ModelArtifact, device: int = 0):
        super().__init__(artifact)
        if not artifact.engines:
            raise ModelArtifactError(f"{artifact.path} names no TensorRT engine; the tensorrt backend needs one "
                                     "(pass the .engine, or a manifest with an 'engine' entry).")
        self.device = device
        self._cuda = self._stream = self._engine = self._context = None
        self._bindings: list[_Binding] = []
        self._batch: int | None = None
        self._max_batch = artifact.batch.max

    @property
    def max_batch(self) -> int:
        return self._limited(self._max_batch)

    def _activate(self) -> None:
        from .cuda_api import load_cuda_api

        trt = _import_tensorrt()
        self._cuda = load_cuda_api(self.device)
        self.engine_file = choose_engine(self.artifact.engines, trt.__version__, self._cuda.device_name(),
                                         self._cuda.compute_capability())
        self._engine = self._deserialize(trt)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        specs = {n: self._tensor_spec(trt, n) for n in names}
        check_graph_matches(self.artifact, tuple(specs[n] for n in inputs),
                            tuple(specs[n] for n in names if n not in inputs))
        self._context = self._engine.create_execution_context()
        self._stream = self._cuda.new_stream()
        self._max_batch = self._allocate(trt, names, inputs)

    def _tensor_spec(self, trt, name: str) -> TensorSpec:
        dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name))).name
        shape = tuple(d if d >= 0 else "N" for d in self._engine.get_tensor_shape(name))
        return TensorSpec(name, dtype, shape)

    def _deserialize(self, trt):
        self._trt_logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._trt_logger)
        engine = self._runtime.deserialize_cuda_engine(self.engine_file.path.read_bytes())
        if engine is None:
            raise ModelArtifactError(f"TensorRT could not deserialize {self.engine_file.path} (see the TensorRT "
                                     "log above); the file is corrupt or from another build. Rebuild the engine.")
        return engine

    def _allocate(self, trt, names: list[str], inputs: list[str]) -> int:
        """Set every input to its profile maximum, size all buffers from that, bind addresses once."""
        for name in inputs:
            max_shape = tuple(self._engine.get_tensor_profile_shape(name, PROFILE)[2])
            _trt_ok(self._context.set_input_shape(name, max_shape), f"set_input_shape({name}, {max_shape})")
        for name in names:
            shape = tuple(self._context.get_tensor_shape(name))
            host = self._cuda.pinned_empty(shape, trt.nptype(self._engine.get_tensor_dtype(name)))
            device = self._cuda.device_alloc(host.nbytes)
            _trt_ok(self._context.set_tensor_address(name, device), f"set_tensor_address({name})")
            self._bindings.append(_Binding(name, name in inputs, host, device))
        self._batch = self._bindings[0].host.shape[0]
        return self._batch

    def _set_batch(self, batch: int) -> None:
        if batch == self._batch:
            return
        for binding in self._bindings:
            if binding.is_input:
                shape = (batch, *binding.host.shape[1:])
                _trt_ok(self._context.set_input_shape(binding.name, shape), f"set_input_shape({binding.name}, {shape})")
        self._batch = batch

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch = next(iter(feeds.values())).shape[0]
        self._set_batch(batch)
        for binding in self._bindings:
            if binding.is_input:
                staged = binding.host[:batch]
                np.copyto(staged, feeds[binding.name], casting="same_kind")
                self._cuda.copy_htod_async(binding.device, staged, self._stream)
        _trt_ok(self._context.execute_async_v3(self._cuda.stream_handle(self._stream)), "execute_async_v3")
        outputs = {}
        for binding in self._bindings:
            if not binding.is_input:
                outputs[binding.name] = binding.host[:batch]
                self._cuda.copy_dtoh_async(outputs[binding.name], binding.device, self._stream)
        self._cuda.synchronize(self._stream)
        return {name: view.copy() for name, view in outputs.items()}  # the pinned buffers are reused

    def _deactivate(self) -> None:
        self._context = self._engine = None
        self._bindings.clear()
        self._cuda.free(self._stream)
        self._stream = None
        self._batch = None
