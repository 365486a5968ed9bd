"""The SR model artifact as the runtime sees it: a manifest (see `runtime.contract`) and the files it names.

`load_artifact(path)` accepts
- an ONNX manifest `NAME.json`: its `NAME.onnx`, plus every engine built from it (`*.engine.json` in the
  same folder whose source checksum is this ONNX's);
- an `.onnx` (its manifest beside it is used if present; otherwise the I/O contract is read from the graph);
- an engine `NAME.engine` or its manifest `NAME.engine.json` (plus the source ONNX when it is still there,
  as a fallback for machines without TensorRT).
Everything the runtime needs to know about the model (tensor names, sizes, batch range) comes from here, so
nothing else in the runtime is specific to one network.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from .contract import (
    ENGINE_MANIFEST_SUFFIX, BatchProfile, EngineManifest, OnnxManifest, TensorSpec, engine_manifest_path,
    read_manifest,
)
from .errors import ModelArtifactError
from .files import sha256_of
from .tiles import Tiling

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 32  # batch limit assumed for an ONNX file without a manifest and with a dynamic batch


@dataclass(frozen=True)
class EngineFile:
    """One TensorRT engine and its manifest."""

    path: Path
    manifest: EngineManifest


@dataclass(frozen=True)
class ModelArtifact:
    """A loaded artifact. `manifest` is None when the contract was inferred from a bare ONNX graph."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchProfile
    onnx_path: Path | None = None
    manifest_path: Path | None = None
    manifest: OnnxManifest | None = None
    engines: tuple[EngineFile, ...] = ()

    @property
    def engine_path(self) -> Path | None:
        return self.engines[0].path if self.engines else None

    @property
    def model_name(self) -> str:
        if self.manifest is not None:
            return self.manifest.model
        return self.engines[0].manifest.model if self.engines else self.path.stem

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

    @property
    def tiling(self) -> Tiling | None:
        """How the model may run at a face's recorded resolution (`runtime.tiles`), or None: faces are resized
        to the input. Only from a manifest whose export verified it, for a model with no output but the image
        (tiles have no per-face landmarks)."""
        entry = self.manifest.tiling if self.manifest is not None else None
        if entry is None or len(self.outputs) != 1:
            return None
        tile = self.input_hw[0]
        if entry["stride"] > tile or 2 * entry["ramp"] > tile:
            raise ModelArtifactError(f"{self.manifest_path or self.path}: tiling {entry} does not fit the {tile} px "
                                     "input (stride at most the input, ramp at most half of it); re-export the model.")
        return Tiling(tile, entry["stride"], entry["ramp"])


def _image_spec(specs, kind: str, path: Path) -> TensorSpec:
    shape = specs[0].shape if specs else ()
    if len(shape) != 4 or shape[1] != 3 or not all(isinstance(d, int) for d in shape[2:]):
        raise ModelArtifactError(
            f"{path}: image {kind} has shape {list(shape) or 'none'}, expected [N, 3, H, W] with fixed H "
            "and W (RGB NCHW). Re-export the model with a fixed spatial size."
        )
    return specs[0]


def load_artifact(path: str | Path) -> ModelArtifact:
    """Load a manifest (.json / .engine.json), an .onnx or an .engine; raises ModelArtifactError with the fix."""
    path = Path(path)
    if not path.is_file():
        raise ModelArtifactError(f"model artifact {path} does not exist; expected a manifest .json, an .onnx "
                                 "or an .engine written by `python -m export.build` / `export.tensorrt_build`.")
    suffix = ".engine.json" if path.name.endswith(ENGINE_MANIFEST_SUFFIX) else path.suffix.lower()
    loaders = {".json": _from_manifest_file, ".engine.json": _from_manifest_file, ".onnx": _from_onnx_file,
               ".engine": _from_engine_file}
    loader = loaders.get(suffix)
    if loader is None:
        raise ModelArtifactError(f"model artifact {path} has suffix {path.suffix!r}; expected one of "
                                 ".json, .onnx, .engine (a manifest, an ONNX model or a TensorRT engine).")
    artifact = loader(path)
    _ = (artifact.image_input, artifact.image_output)  # raises now, not mid-stream, if not [N, 3, H, W]
    return artifact


# twin role -> (the default manifest's pointer field, the field the twin's own manifest must carry)
TWIN_FIELDS = {"camera": ("camera_grade", "recording_gate"), "fused": ("fused_grade", "fused_input")}


def with_twins(artifacts: list[ModelArtifact], roles: tuple[str, ...] = ("camera",)) -> list[ModelArtifact]:
    """`artifacts` plus the twins of each `role` their manifests name (`camera_grade`, `fused_grade`: exported
    beside them by `python -m export.build`), loaded and checked like any artifact. A twin that is missing or
    broken is a warning, not an error: the default model still enhances every face, as it did before twins."""
    loaded = list(artifacts)
    given = {a.manifest_path.resolve() for a in artifacts if a.manifest_path is not None}
    for role in roles:
        pointer, marker = TWIN_FIELDS[role]
        for artifact in artifacts:
            name = getattr(artifact.manifest, pointer, None)
            if name is None or artifact.manifest_path is None:
                continue
            path = beside(artifact.manifest_path, name, f"{role}-grade twin")
            if path.resolve() in given:
                continue
            try:
                twin = load_artifact(path)
            except ModelArtifactError as err:
                log.warning("%s: its %s-grade twin cannot be used (%s); its faces go to %s. Re-export with "
                            "`python -m export.build --model %s` to restore it.", artifact.manifest_path, role, err,
                            artifact.path.name, artifact.model_name)
                continue
            if getattr(twin.manifest, marker, None) is None:
                log.warning("%s has no %s: it is not used as a %s-grade twin", path, marker, role)
                continue
            loaded.append(twin)
            given.add(path.resolve())
    return loaded


# --- ONNX artifacts ---------------------------------------------------------------------------------------
def beside(manifest_path: Path, name: str, what: str) -> Path:
    """A file a manifest names: a plain file name in the manifest's own folder, never a path out of it."""
    if not name or Path(name).name != name or name in (".", ".."):
        raise ModelArtifactError(f"manifest {manifest_path} names its {what} {name!r}; a manifest may only name a file "
                                 "in its own folder (a plain file name). Re-export the model.")
    return manifest_path.parent / name


def _checked_onnx(manifest: OnnxManifest, manifest_path: Path) -> Path:
    onnx_path = beside(manifest_path, manifest.onnx, "ONNX file")
    if not onnx_path.is_file():
        raise ModelArtifactError(f"manifest {manifest_path} names {onnx_path}, which does not exist; keep the model "
                                 "files beside their manifest.")
    if manifest.onnx_sha256 and sha256_of(onnx_path) != manifest.onnx_sha256:
        raise ModelArtifactError(f"{onnx_path} does not match the checksum in its manifest {manifest_path.name}: the "
                                 "file was changed or replaced after export. Re-export the model.")
    failed = manifest.failed_checks()
    if failed:
        log.warning("%s was published with failed checks: %s (see the manifest)", manifest_path, ", ".join(failed))
    return onnx_path


def _from_onnx_manifest(manifest_path: Path, manifest: OnnxManifest, given: Path) -> ModelArtifact:
    return ModelArtifact(path=given, inputs=manifest.inputs, outputs=manifest.outputs, batch=manifest.batch,
                         onnx_path=_checked_onnx(manifest, manifest_path), manifest_path=manifest_path,
                         manifest=manifest, engines=_engines_built_from(manifest, manifest_path))


def _engines_built_from(manifest: OnnxManifest, manifest_path: Path) -> tuple[EngineFile, ...]:
    """Engines in the folder whose manifest names this ONNX artifact (by name and checksum)."""
    found = []
    for candidate in sorted(manifest_path.parent.glob(f"*{ENGINE_MANIFEST_SUFFIX}")):
        try:
            engine = read_manifest(candidate)
        except ModelArtifactError as err:
            log.warning("ignoring %s: %s", candidate, err)
            continue
        if isinstance(engine, EngineManifest) and engine.source.manifest == manifest_path.name \
                and Path(engine.engine).name == engine.engine and (candidate.parent / engine.engine).is_file() \
                and engine.source.onnx_sha256 == manifest.onnx_sha256:
            found.append(EngineFile(candidate.parent / engine.engine, engine))
    return tuple(found)


def _from_onnx_file(path: Path) -> ModelArtifact:
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        return _infer_from_onnx(path)
    manifest = read_manifest(manifest_path)
    if not isinstance(manifest, OnnxManifest) or manifest.onnx != path.name:
        raise ModelArtifactError(f"{manifest_path} does not describe {path.name}; pass the manifest itself, or keep "
                                 "each model beside its own manifest.")
    return _from_onnx_manifest(manifest_path, manifest, path)


def _infer_from_onnx(path: Path) -> ModelArtifact:
    from .onnx_io import open_session, session_io

    inputs, outputs = session_io(open_session(path, ["CPUExecutionProvider"]))
    batch_dim = inputs[0].shape[0] if inputs and inputs[0].shape else "N"
    batch = BatchProfile(batch_dim, batch_dim, batch_dim) if isinstance(batch_dim, int) else \
        BatchProfile(1, min(8, DEFAULT_MAX_BATCH), DEFAULT_MAX_BATCH)
    log.info("%s has no manifest beside it; I/O contract inferred from the ONNX graph: inputs %s, outputs %s, "
             "batch up to %d", path, [(s.name, list(s.shape)) for s in inputs],
             [(s.name, list(s.shape)) for s in outputs], batch.max)
    return ModelArtifact(path=path, inputs=inputs, outputs=outputs, batch=batch, onnx_path=path)


# --- engines --------------------------------------------------------------------------------------------
def _from_engine_manifest(manifest_path: Path, manifest: EngineManifest, given: Path) -> ModelArtifact:
    engine_path = beside(manifest_path, manifest.engine, "engine")
    if not engine_path.is_file():
        raise ModelArtifactError(f"engine manifest {manifest_path} names {engine_path}, which does not exist; keep "
                                 "the engine beside its manifest or rebuild it with `python -m export.tensorrt_build`.")
    onnx_path = beside(manifest_path, manifest.source.onnx, "source ONNX")
    onnx_ok = onnx_path.is_file() and sha256_of(onnx_path) == manifest.source.onnx_sha256
    return ModelArtifact(path=given, inputs=manifest.inputs, outputs=manifest.outputs, batch=manifest.batch,
                         onnx_path=onnx_path if onnx_ok else None, manifest_path=manifest_path,
                         engines=(EngineFile(engine_path, manifest),))


def _from_engine_file(path: Path) -> ModelArtifact:
    manifest_path = engine_manifest_path(path)
    if not manifest_path.is_file():
        raise ModelArtifactError(f"engine {path} has no manifest {manifest_path.name} beside it; an engine is only "
                                 "usable with the manifest written when it was built. Rebuild it with "
                                 "`python -m export.tensorrt_build NAME.json`, or pass the .onnx instead.")
    manifest = read_manifest(manifest_path)
    if not isinstance(manifest, EngineManifest) or manifest.engine != path.name:
        raise ModelArtifactError(f"{manifest_path} does not describe the engine {path.name}; rebuild the engine.")
    return _from_engine_manifest(manifest_path, manifest, path)


def _from_manifest_file(path: Path) -> ModelArtifact:
    manifest = read_manifest(path)
    if isinstance(manifest, EngineManifest):
        return _from_engine_manifest(path, manifest, path)
    return _from_onnx_manifest(path, manifest, path)
