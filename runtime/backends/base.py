"""The one backend interface: `activate` / `infer(feeds)` / `deactivate`, usable as a context manager.

Subclasses implement `_activate`, `_infer` and `_deactivate` only. The base class checks state, validates
feeds against the artifact's input specs (names, dtypes, shapes, batch range) and times each call.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from ..artifact import ModelArtifact, TensorSpec
from ..errors import BackendError, ModelArtifactError, RuntimeToolkitError

log = logging.getLogger(__name__)


class Backend:
    """Base class. Feeds and outputs are dicts of tensor name -> numpy array.

    Attributes:
        name: the backend's CLI name.
        last_latency_ms: wall time of the last `infer` call (results on the host), or None.
        concurrent_infer: `infer` may be called from several threads at once (parallel SR workers).
        batch_limit: at most this many faces per call (None: the artifact's max batch). On a CPU, where
            larger batches are not faster, a small limit keeps the activation memory down.
    """

    name = "base"
    concurrent_infer = False

    def __init__(self, artifact: ModelArtifact):
        self.artifact = artifact
        self.is_active = False
        self.last_latency_ms: float | None = None
        self.batch_limit: int | None = None

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.artifact.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self.artifact.outputs

    @property
    def max_batch(self) -> int:
        return self._limited(self.artifact.batch.max)

    def _limited(self, max_batch: int) -> int:
        return min(max_batch, self.batch_limit) if self.batch_limit else max_batch

    # --- lifecycle ---------------------------------------------------------------------------------
    def activate(self) -> "Backend":
        if self.is_active:
            raise BackendError(f"{self.name}: activate() called twice; call deactivate() first.")
        self._activate()
        self.is_active = True
        log.info("%s backend active for %s", self.name, self.artifact.path)
        return self

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    def __enter__(self) -> "Backend":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # --- inference -----------------------------------------------------------------------------------
    def infer(self, feeds: dict[str, np.ndarray], check_inputs: bool = True) -> dict[str, np.ndarray]:
        """Run one batch; returns every output by name, as host arrays."""
        if not self.is_active:
            raise BackendError(f"{self.name}: infer() before activate(); use `with backend:` or call activate().")
        if check_inputs:
            self.check_feeds(feeds)
        start = time.perf_counter()
        try:
            outputs = self._infer(feeds)
        except RuntimeToolkitError:
            raise
        except Exception as err:  # framework errors, reported with the backend and model they came from
            raise BackendError(f"{self.name}: inference on {self.artifact.path} failed: {err}") from err
        self.last_latency_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Raise BackendError unless feeds match the input specs and the batch range."""
        expected = {spec.name for spec in self.inputs}
        if set(feeds) != expected:
            raise BackendError(f"{self.name}: feeds {sorted(feeds)} received, expected exactly {sorted(expected)}.")
        for spec in self.inputs:
            problem = describe_mismatch(spec, feeds[spec.name], self.artifact.batch.min, self.max_batch)
            if problem:
                raise BackendError(f"{self.name}: input {spec.name!r} {problem}")

    # --- for subclasses ---------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError


def infer_batched(backend: Backend, images: np.ndarray) -> dict[str, np.ndarray]:
    """Run an [N, ...] array through the image input in chunks of at most `backend.max_batch`; every output
    concatenated back to N. The one chunking rule the runtime, export checks and benchmarks share."""
    name = backend.artifact.image_input.name
    step = backend.max_batch
    chunks = [backend.infer({name: images[i:i + step]}) for i in range(0, len(images), step)]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def describe_mismatch(spec: TensorSpec, array: np.ndarray, min_batch: int, max_batch: int) -> str | None:
    """What is wrong with `array` for `spec` (received vs expected and the fix), or None if it fits."""
    if not isinstance(array, np.ndarray):
        return f"is a {type(array).__name__}, expected a numpy array of {spec.dtype}."
    if array.dtype != np.dtype(spec.dtype):
        return f"has dtype {array.dtype}, expected {spec.dtype}; convert with .astype(np.{spec.dtype})."
    if array.ndim != len(spec.shape):
        return f"has shape {list(array.shape)}, expected {list(spec.shape)}."
    for axis, dim in spec.static_dims.items():
        if array.shape[axis] != dim:
            return f"has shape {list(array.shape)}, expected {list(spec.shape)} (axis {axis} must be {dim})."
    if array.ndim and not min_batch <= array.shape[0] <= max_batch:
        return (f"has batch {array.shape[0]}, expected {min_batch}..{max_batch}; split the batch "
                "(see runtime.pipeline.run_batched).")
    return None


def check_graph_matches(artifact: ModelArtifact, graph_inputs: tuple[TensorSpec, ...],
                        graph_outputs: tuple[TensorSpec, ...]) -> None:
    """The model file must have the tensors its manifest promises, with the same dtypes and shapes (extra
    outputs are fine). Checked at load, so a wrong model is refused before the first frame."""
    graph_in = {s.name: s for s in graph_inputs}
    graph_out = {s.name: s for s in graph_outputs}
    problems = []
    if sorted(graph_in) != sorted(s.name for s in artifact.inputs):
        problems.append(f"inputs {sorted(graph_in)} vs {sorted(s.name for s in artifact.inputs)}")
    missing = [s.name for s in artifact.outputs if s.name not in graph_out]
    if missing:
        problems.append(f"outputs {missing} missing (the graph has {sorted(graph_out)})")
    for promised, graph in ((artifact.inputs, graph_in), (artifact.outputs, graph_out)):
        for spec in promised:
            if spec.name in graph:
                problem = _spec_mismatch(spec, graph[spec.name], artifact.batch)
                if problem:
                    problems.append(f"{spec.name!r}: {problem}")
    if problems:
        raise ModelArtifactError(
            f"{artifact.path}: the model file does not match its manifest {artifact.manifest_path}: "
            f"{'; '.join(problems)}. The manifest belongs to another model: re-export, or keep each model beside "
            "its own manifest."
        )


def _spec_mismatch(promised: TensorSpec, actual: TensorSpec, batch) -> str | None:
    if promised.dtype != actual.dtype:
        return f"dtype {actual.dtype} in the graph, {promised.dtype} in the manifest"
    if len(promised.shape) != len(actual.shape):
        return f"shape {list(actual.shape)} in the graph, {list(promised.shape)} in the manifest"
    for axis, (want, have) in enumerate(zip(promised.shape, actual.shape)):
        fixed_batch = axis == 0 and batch.min == batch.max == have
        if isinstance(have, int) and want != have and not fixed_batch:
            return f"shape {list(actual.shape)} in the graph, {list(promised.shape)} in the manifest (axis {axis})"
    return None
