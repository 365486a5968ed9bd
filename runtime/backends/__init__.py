"""Inference backends behind one interface (`Backend`): onnxruntime, tensorrt, torch, triton (remote).

Importing this package imports no inference framework; each backend imports its own when activated.
"""
from __future__ import annotations

import importlib.util
import logging

from ..artifact import ModelArtifact, load_artifact, with_twins
from ..errors import BackendError
from .base import Backend, infer_batched
from .ensemble import MirrorEnsemble
from .onnxruntime_backend import OnnxRuntimeBackend
from .tensorrt_backend import TensorRTBackend
from .torch_backend import TorchBackend
from .triton_backend import RemoteArtifact, TritonBackend, fetch_artifact, is_triton_url

__all__ = ["Backend", "BACKENDS", "create_backend", "infer_batched", "load_model", "load_models",
           "resolve_backend_name"]

log = logging.getLogger(__name__)

BACKENDS: dict[str, type[Backend]] = {
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": TensorRTBackend,
    "torch": TorchBackend,
    "triton": TritonBackend,
}


def tensorrt_installed() -> bool:
    """Whether `import tensorrt` would find a package (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def resolve_backend_name(requested: str, artifact: ModelArtifact) -> str:
    """`auto` -> triton for a triton:// model, tensorrt when there is an engine and TensorRT is installed, else
    onnxruntime."""
    remote = isinstance(artifact, RemoteArtifact)
    if remote or requested == "triton":
        if not remote or requested not in ("auto", "triton"):
            raise BackendError(f"--backend {requested} with --model {artifact.path}: a triton://HOST:PORT/NAME model "
                               "runs only on --backend triton (or auto), and --backend triton needs such a model.")
        return "triton"
    if requested != "auto":
        if requested not in BACKENDS:
            raise BackendError(f"--backend {requested!r} is unknown; expected auto or one of {', '.join(BACKENDS)}.")
        return requested
    has_engine = bool(artifact.engines)
    if has_engine and tensorrt_installed():
        return "tensorrt"
    if artifact.onnx_path is not None and artifact.onnx_path.is_file():
        if has_engine:
            log.info("TensorRT is not installed; running %s with onnxruntime instead of the engine",
                     artifact.onnx_path.name)
        return "onnxruntime"
    raise BackendError(f"{artifact.path}: no usable model file for --backend auto: the engine needs TensorRT "
                       "(not installed) and no ONNX file is available. Install TensorRT, or pass the .onnx.")


def create_backend(requested: str, artifact: ModelArtifact, self_ensemble: bool = False, **options) -> Backend:
    """An inactive backend for `artifact` (use it as a context manager); `self_ensemble`: each batch also runs
    mirrored and the two images are averaged (`MirrorEnsemble`, twice the SR time)."""
    name = resolve_backend_name(requested, artifact)
    backend = BACKENDS[name](artifact, **options)
    return MirrorEnsemble(backend) if self_ensemble else backend


def load_model(spec: str) -> ModelArtifact:
    """A local artifact (`runtime.artifact.load_artifact`) or, for triton://HOST:PORT/NAME, the served model
    described by the server's config."""
    return fetch_artifact(spec) if is_triton_url(spec) else load_artifact(spec)


def load_models(specs: list[str], camera_grade: bool = True, fused_grade: bool = False) -> list[ModelArtifact]:
    """`load_model` of each, plus the camera-grade twins their manifests name (`camera_grade` False: without)
    and, with `fused_grade` (the run fuses frames), the fused-grade twins."""
    artifacts = [load_model(spec) for spec in specs]
    roles = ("camera",) * camera_grade + ("fused",) * fused_grade
    return with_twins(artifacts, roles) if roles else artifacts
