"""The SR model artifact: a manifest (`name.json`) and the ONNX/engine files it names.

`load_artifact(path)` accepts a manifest, an `.onnx` (its manifest beside it is used if present; otherwise
the I/O contract is read from the graph) or an `.engine` (needs its manifest beside it). Everything the
runtime needs to know about the model (tensor names, sizes, batch range) comes from here, so nothing
else in the runtime is specific to one network.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import ModelArtifactError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "fsr-edge-manifest/1"
DEFAULT_MAX_BATCH = 32  # batch limit assumed for an ONNX file without a manifest and with a dynamic batch
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32",
               "tensor(int64)": "int64"}


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype (numpy name) and shape of one model input or output; str dims are dynamic."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    value_range: tuple[float, float] | None = None

    @property
    def static_dims(self) -> dict[int, int]:
        return {axis: dim for axis, dim in enumerate(self.shape) if isinstance(dim, int)}


@dataclass(frozen=True)
class BatchRange:
    """The dynamic batch profile (TensorRT-style min/opt/max)."""

    min: int = 1
    opt: int = 1
    max: int = DEFAULT_MAX_BATCH


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded artifact. `manifest` is {} when the contract was inferred from an ONNX graph."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchRange
    onnx_path: Path | None = None
    engine_path: Path | None = None
    manifest_path: Path | None = None
    manifest: dict = field(default_factory=dict)

    @property
    def image_input(self) -> TensorSpec:
        """The image input: the first input, [N, 3, H, W]."""
        return _image_spec(self.inputs[:1], "input", self.path)

    @property
    def image_output(self) -> TensorSpec:
        """The image output: the first 4-D output, [N, 3, H, W]."""
        return _image_spec([s for s in self.outputs if len(s.shape) == 4][:1], "output", self.path)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.image_input.shape[2], self.image_input.shape[3]

    @property
    def output_hw(self) -> tuple[int, int]:
        return self.image_output.shape[2], self.image_output.shape[3]


def _image_spec(specs, kind: str, path: Path) -> TensorSpec:
    shape = specs[0].shape if specs else ()
    if len(shape) != 4 or shape[1] != 3 or not all(isinstance(d, int) for d in shape[2:]):
        raise ModelArtifactError(
            f"{path}: image {kind} has shape {list(shape) or 'none'}, expected [N, 3, H, W] with fixed H "
            "and W (RGB NCHW). Re-export the model with a fixed spatial size."
        )
    return specs[0]


def load_artifact(path: str | Path) -> ModelArtifact:
    """Load a manifest (.json), an .onnx or an .engine; raises ModelArtifactError with the fix."""
    path = Path(path)
    if not path.is_file():
        raise ModelArtifactError(f"model artifact {path} does not exist; expected a manifest .json, an .onnx "
                                 "or an .engine written by `python -m export.build`.")
    loaders = {".json": _from_manifest_file, ".onnx": _from_onnx_file, ".engine": _from_engine_file}
    loader = loaders.get(path.suffix.lower())
    if loader is None:
        raise ModelArtifactError(f"model artifact {path} has suffix {path.suffix!r}; expected one of "
                                 f"{', '.join(loaders)} (a manifest, an ONNX model or a TensorRT engine).")
    artifact = loader(path)
    _ = (artifact.image_input, artifact.image_output)  # raises now, not mid-stream, if not [N, 3, H, W]
    return artifact


# --- manifests ----------------------------------------------------------------------------------------
def read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelArtifactError(f"manifest {path} is not readable JSON ({err}); re-export the model.") from err
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ModelArtifactError(f"{path}: manifest format {found!r}, expected {MANIFEST_FORMAT!r}; "
                                 "pass a manifest written by `python -m export.build`.")
    return data


def _specs(manifest: dict, key: str, path: Path) -> tuple[TensorSpec, ...]:
    entries = manifest.get(key)
    if not isinstance(entries, list) or not entries:
        raise ModelArtifactError(f"{path}: manifest {key!r} is {entries!r}, expected a non-empty list of "
                                 "{name, dtype, shape}; re-export the model.")
    try:
        return tuple(TensorSpec(name=str(e["name"]), dtype=str(e.get("dtype", "float32")),
                                shape=tuple(d if isinstance(d, int) else str(d) for d in e["shape"]),
                                value_range=tuple(e["range"]) if "range" in e else None) for e in entries)
    except (KeyError, TypeError) as err:
        raise ModelArtifactError(f"{path}: manifest {key!r} entry lacks {err}; each needs name and shape.") from err


def _batch(manifest: dict, path: Path) -> BatchRange:
    block = manifest.get("batch", {})
    try:
        batch = BatchRange(int(block.get("min", 1)), int(block.get("opt", 1)),
                           int(block.get("max", DEFAULT_MAX_BATCH)))
    except (AttributeError, TypeError, ValueError) as err:
        raise ModelArtifactError(f"{path}: manifest 'batch' is {block!r}, expected {{min, opt, max}} "
                                 "integers.") from err
    if not 1 <= batch.min <= batch.opt <= batch.max:
        raise ModelArtifactError(f"{path}: manifest batch {block!r} needs 1 <= min <= opt <= max.")
    return batch


def _sibling(manifest: dict, key: str, manifest_path: Path) -> Path | None:
    name = manifest.get(key)
    return manifest_path.parent / name if name else None


def _artifact_from_manifest(manifest_path: Path, given: Path, manifest: dict) -> ModelArtifact:
    return ModelArtifact(path=given, inputs=_specs(manifest, "inputs", manifest_path),
                         outputs=_specs(manifest, "outputs", manifest_path), batch=_batch(manifest, manifest_path),
                         onnx_path=_sibling(manifest, "onnx", manifest_path),
                         engine_path=_sibling(manifest, "engine", manifest_path),
                         manifest_path=manifest_path, manifest=manifest)


def _from_manifest_file(path: Path) -> ModelArtifact:
    artifact = _artifact_from_manifest(path, path, read_manifest(path))
    files = [p for p in (artifact.onnx_path, artifact.engine_path) if p is not None]
    if not any(p.is_file() for p in files):
        named = ", ".join(str(p) for p in files) or "no 'onnx' or 'engine' entry"
        raise ModelArtifactError(f"manifest {path} names {named}, but none of it exists; keep the model files "
                                 "beside their manifest.")
    return artifact


def _check_names_file(manifest: dict, key: str, path: Path, manifest_path: Path) -> None:
    named = manifest.get(key)
    if named is not None and named != path.name:
        raise ModelArtifactError(f"{manifest_path} describes {key} file {named!r}, but {path.name!r} was given; "
                                 "pass the manifest itself, or keep each model beside its own manifest.")


def _from_onnx_file(path: Path) -> ModelArtifact:
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        return _infer_from_onnx(path)
    manifest = read_manifest(manifest_path)
    _check_names_file(manifest, "onnx", path, manifest_path)
    artifact = _artifact_from_manifest(manifest_path, path, manifest)
    return replace(artifact, onnx_path=path)


def _from_engine_file(path: Path) -> ModelArtifact:
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        raise ModelArtifactError(f"engine {path} has no manifest {manifest_path.name} beside it; an engine is "
                                 "only usable with the manifest written when it was built. Rebuild it with "
                                 "`python -m export.build`, or pass the .onnx instead.")
    manifest = read_manifest(manifest_path)
    _check_names_file(manifest, "engine", path, manifest_path)
    artifact = _artifact_from_manifest(manifest_path, path, manifest)
    return replace(artifact, engine_path=path)


# --- ONNX without a manifest ----------------------------------------------------------------------------
def _spec_from_ort(node) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "N") for d in node.shape)
    return TensorSpec(name=node.name, dtype=_ORT_DTYPES.get(node.type, node.type), shape=shape)


def _infer_from_onnx(path: Path) -> ModelArtifact:
    from .backends.onnxruntime_backend import open_cpu_session

    session = open_cpu_session(path)
    inputs = tuple(_spec_from_ort(n) for n in session.get_inputs())
    outputs = tuple(_spec_from_ort(n) for n in session.get_outputs())
    batch_dim = inputs[0].shape[0] if inputs and inputs[0].shape else "N"
    batch = BatchRange(batch_dim, batch_dim, batch_dim) if isinstance(batch_dim, int) else BatchRange()
    log.info("%s has no manifest beside it; I/O contract inferred from the ONNX graph: inputs %s, outputs %s, "
             "batch up to %d", path, [(s.name, list(s.shape)) for s in inputs],
             [(s.name, list(s.shape)) for s in outputs], batch.max)
    return ModelArtifact(path=path, inputs=inputs, outputs=outputs, batch=batch, onnx_path=path)
