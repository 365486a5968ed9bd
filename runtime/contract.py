"""The artifact contract: the JSON manifest beside every exported `.onnx` and every built `.engine`.

This module is the only place that writes or parses manifest JSON. It is pure Python (no numpy, no
torch), so the exporter, calibration, the lean runtime, the benchmarks and the tests all share it. The
same contract is published as a JSON Schema in `runtime/manifest.schema.json` for outside tools.

Two kinds of manifest (schema version 2):
- `OnnxManifest` (`NAME.json` beside `NAME.onnx`), written once by `python -m export.build` and never
  rewritten: model, declared I/O, steps, precision, batch profile, weights provenance, checks.
- `EngineManifest` (`NAME.engine.json` beside `NAME.engine`), written by `python -m export.tensorrt_build`:
  the source ONNX artifact it was compiled from (and its sha256), the TensorRT release, GPU and compute
  capability, the Jetson release, the builder path and the profile. An engine is its own artifact.

Manifests of schema version 1 (written before engines had their own manifest) load with a warning; an
engine recorded inside a version-1 manifest must be rebuilt.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .files import write_json_atomic
from .errors import ModelArtifactError
from .recording import RecordingGate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
FORMAT = f"fsr-edge-manifest/{SCHEMA_VERSION}"
LEGACY_FORMAT = "fsr-edge-manifest/1"
ENGINE_MANIFEST_SUFFIX = ".engine.json"
SCHEMA_FILE = Path(__file__).with_name("manifest.schema.json")
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The command that makes a manifest of the current format, for error messages.
REEXPORT = "re-export it with `python -m export.build --model MODEL ...`"
# Schema-1 manifests carry no checksum of their ONNX file: read only when the operator opts in.
ALLOW_SCHEMA_1_ENV = "FSR_EDGE_ALLOW_SCHEMA_1"


# --- building blocks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: numpy dtype name, shape (str dims are dynamic, e.g. "N"), value range."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    value_range: tuple[float, float] | None = None

    @property
    def static_dims(self) -> dict[int, int]:
        return {axis: dim for axis, dim in enumerate(self.shape) if isinstance(dim, int)}

    def to_dict(self) -> dict:
        spec = {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}
        if self.value_range is not None:
            spec["range"] = list(self.value_range)
        return spec

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "TensorSpec":
        _expect(isinstance(data, dict), where, "a tensor entry", data, "{name, dtype, shape[, range]}")
        name = _field(data, "name", str, where)
        dtype = _field(data, "dtype", str, where)
        _expect(dtype in DTYPES, f"{where}.dtype", "the dtype", dtype, f"one of {', '.join(DTYPES)}")
        shape = _field(data, "shape", list, where)
        for dim in shape:
            ok = (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0) or (isinstance(dim, str) and dim)
            _expect(ok, f"{where}.shape", "the shape", shape, "positive integers or named dynamic axes")
        value_range = data.get("range")
        if value_range is not None:
            ok = isinstance(value_range, list) and len(value_range) == 2 and all(
                isinstance(v, (int, float)) for v in value_range)
            _expect(ok, f"{where}.range", "the range", value_range, "[low, high]")
            value_range = (float(value_range[0]), float(value_range[1]))
        return cls(name, dtype, tuple(shape), value_range)


@dataclass(frozen=True)
class BatchProfile:
    """The dynamic batch axis as a TensorRT optimisation profile: min <= opt <= max."""

    min: int = 1
    opt: int = 8
    max: int = 32

    def __post_init__(self):
        values = (self.min, self.opt, self.max)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or \
                not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile {self.min}:{self.opt}:{self.max}: expected MIN:OPT:MAX integers with "
                             "1 <= MIN <= OPT <= MAX, e.g. 1:8:32")

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        """'MIN:OPT:MAX', or 'N' for 1:N:N."""
        try:
            values = [int(v) for v in str(text).split(":")]
        except ValueError:
            values = []
        if len(values) == 1:
            values = [1, values[0], values[0]]
        if len(values) != 3:
            raise ValueError(f"batch profile {text!r}: expected MIN:OPT:MAX, e.g. 1:8:32")
        return cls(*values)

    @property
    def is_static(self) -> bool:
        return self.min == self.opt == self.max

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}

    def __str__(self) -> str:
        return f"{self.min}:{self.opt}:{self.max}"


@dataclass(frozen=True)
class WeightsInfo:
    """Where the exported weights came from; `path` None means random initialisation (pipeline tests)."""

    path: str | None = None
    sha256: str | None = None

    @property
    def random_init(self) -> bool:
        return self.path is None

    def to_dict(self) -> dict:
        return {"random_init": True} if self.random_init else {"path": self.path, "sha256": self.sha256}


@dataclass(frozen=True)
class TensorRTBuild:
    """How an engine was built. `network` is "strongly_typed" or "legacy" (weakly typed + builder flags)."""

    version: str
    network: str
    gpu: str | None = None
    compute_capability: str | None = None
    jetpack: str | None = None  # e.g. "6.1", only on a Jetson
    l4t: str | None = None  # e.g. "36.4.0", only on a Jetson
    builder_flags: tuple[str, ...] = ()
    profile: dict = field(default_factory=dict)  # input name -> {min, opt, max} shapes
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EngineSource:
    """The ONNX artifact an engine was compiled from (names relative to the engine's folder)."""

    manifest: str
    onnx: str
    onnx_sha256: str


# --- the two manifests --------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxManifest:
    """Everything about one exported ONNX file. `steps` is None for a model that is not recurrent."""

    model: str
    precision: str
    onnx: str
    onnx_sha256: str
    opset: int
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchProfile
    weights: WeightsInfo
    scale: int
    steps: int | None = None
    max_steps: int | None = None
    config: dict = field(default_factory=dict)
    batchnorm_folded: bool = False
    checks: dict = field(default_factory=dict)  # parity, accuracy, tensorrt_compat: each a dict with "passed"
    precision_conversion: dict = field(default_factory=dict)
    trtexec: str = ""
    versions: dict = field(default_factory=dict)
    created: str = ""
    # The smallest face, as a fraction of the input side, the weights were trained on (from the weights'
    # metadata: --real-framing trains on faces down to 0.6x the input); None: routing's default floor
    min_input_ratio: float | None = None
    # Set when the model may run on overlapping input-sized tiles of a face at its recorded resolution
    # (`runtime.tiles`): {"stride": px, "ramp": px}, written by export after its `tiling` check passed
    tiling: dict | None = None
    # Weights trained on what cameras record carry the gate that tells, per face, whether they or their clean
    # twin should enhance it (`runtime.recording.RecordingGate.to_dict`); None for other weights
    recording_gate: dict | None = None
    # The clean model's pointer to its camera-grade twin exported beside it (a manifest file name in the same
    # folder): the runtime loads it too and picks per face with the twin's gate
    camera_grade: str | None = None
    # Weights trained on faces fused over a burst of frames (`--fuse-frames`; training.burst): {"burst": N, the
    # frames per training burst}; None for other weights
    fused_input: dict | None = None
    # The clean model's pointer to its fused-grade twin exported beside it: the runtime loads it when fusing
    # and gives it the fused faces that the camera-grade gate calls noisy or compressed (`routing.Twins`)
    fused_grade: str | None = None

    kind = "onnx"

    def to_dict(self) -> dict:
        data = {"format": FORMAT, "kind": self.kind, **_plain(self)}
        data["weights"] = self.weights.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str, legacy: bool = False) -> "OnnxManifest":
        """`legacy`: a schema-1 manifest, which has no checksum of its ONNX file."""
        common = _common_fields(data, where)
        weights = data.get("weights")
        _expect(isinstance(weights, dict), f"{where}.weights", "the weights entry", weights,
                "{path, sha256} or {random_init: true}")
        steps = data.get("steps")
        _expect(steps is None or (isinstance(steps, int) and steps >= 1), f"{where}.steps", "steps", steps,
                "a positive integer, or null for a model that is not recurrent")
        ratio = data.get("min_input_ratio")
        _expect(ratio is None or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1),
                f"{where}.min_input_ratio", "min_input_ratio", ratio, "a number in (0, 1], or null")
        tiling = data.get("tiling")
        _expect(tiling is None or (isinstance(tiling, dict) and set(tiling) == {"stride", "ramp"} and all(
            isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in tiling.values())),
                f"{where}.tiling", "tiling", tiling, "{stride: px, ramp: px} (positive integers), or null")
        gate = data.get("recording_gate")
        if gate is not None:
            try:
                RecordingGate.from_dict(gate, f"{where}.recording_gate")
            except ValueError as err:
                raise ModelArtifactError(f"{err}; {REEXPORT}.") from err
        twin, fused_twin = data.get("camera_grade"), data.get("fused_grade")
        for key, value in (("camera_grade", twin), ("fused_grade", fused_twin)):
            _expect(value is None or (isinstance(value, str) and value.endswith(".json") and Path(value).name == value),
                    f"{where}.{key}", key, value, "a manifest file name in the same folder, or null")
        fused_input = data.get("fused_input")
        burst = fused_input.get("burst") if isinstance(fused_input, dict) else None
        _expect(fused_input is None or (set(fused_input) == {"burst"} and isinstance(burst, int) and
                                        not isinstance(burst, bool) and burst >= 2),
                f"{where}.fused_input", "fused_input", fused_input, "{burst: frames >= 2}, or null")
        return cls(
            **common,
            onnx=_field(data, "onnx", str, where), onnx_sha256="" if legacy else _sha(data, "onnx_sha256", where),
            opset=_field(data, "opset", int, where), scale=_field(data, "scale", int, where),
            weights=WeightsInfo(weights.get("path"), weights.get("sha256")),
            steps=steps, max_steps=data.get("max_steps"), config=data.get("config") or {},
            batchnorm_folded=bool(data.get("batchnorm_folded", False)), checks=data.get("checks") or {},
            precision_conversion=data.get("precision_conversion") or {}, trtexec=data.get("trtexec", ""),
            versions=data.get("versions") or {}, created=data.get("created", ""),
            min_input_ratio=None if ratio is None else float(ratio), tiling=tiling, recording_gate=gate,
            camera_grade=twin, fused_input=fused_input, fused_grade=fused_twin)

    def failed_checks(self) -> list[str]:
        return [name for name, check in self.checks.items() if isinstance(check, dict) and check.get("passed") is False]


@dataclass(frozen=True)
class EngineManifest:
    """A TensorRT engine: its own file and checksum, its source ONNX artifact, and how it was built."""

    model: str
    precision: str
    engine: str
    engine_sha256: str
    source: EngineSource
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchProfile
    tensorrt: TensorRTBuild
    versions: dict = field(default_factory=dict)
    created: str = ""

    kind = "engine"

    def to_dict(self) -> dict:
        return {"format": FORMAT, "kind": self.kind, **_plain(self)}

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "EngineManifest":
        common = _common_fields(data, where)
        source = data.get("source")
        _expect(isinstance(source, dict), f"{where}.source", "the source entry", source,
                "{manifest, onnx, onnx_sha256}")
        trt = data.get("tensorrt")
        _expect(isinstance(trt, dict) and isinstance(trt.get("version"), str) and trt.get("network") in
                ("strongly_typed", "legacy"), f"{where}.tensorrt", "the tensorrt entry", trt,
                "{version, network: strongly_typed|legacy, gpu, compute_capability, ...}")
        known = {f.name for f in fields(TensorRTBuild)}
        trt = {k: (tuple(v) if k == "builder_flags" else v) for k, v in trt.items() if k in known}
        return cls(**common, engine=_field(data, "engine", str, where),
                   engine_sha256=_sha(data, "engine_sha256", where),
                   source=EngineSource(_field(source, "manifest", str, f"{where}.source"),
                                       _field(source, "onnx", str, f"{where}.source"),
                                       _sha(source, "onnx_sha256", f"{where}.source")),
                   tensorrt=TensorRTBuild(**trt), versions=data.get("versions") or {},
                   created=data.get("created", ""))


Manifest = OnnxManifest | EngineManifest


# --- reading and writing ----------------------------------------------------------------------------
def engine_manifest_path(engine_path: str | Path) -> Path:
    """`NAME.engine` -> `NAME.engine.json`."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def write_manifest(path: str | Path, manifest: Manifest) -> Path:
    """Write atomically (readers never see half a file)."""
    return write_json_atomic(path, manifest.to_dict())


def read_manifest(path: str | Path) -> Manifest:
    """Parse and validate a manifest file; ModelArtifactError says what is wrong and how to fix it."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise ModelArtifactError(f"manifest {path} does not exist; {REEXPORT}.") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelArtifactError(f"manifest {path} is not readable JSON ({err}); {REEXPORT}.") from err
    except RecursionError as err:  # e.g. 100,000 nested lists: no manifest looks like that
        raise ModelArtifactError(f"manifest {path} nests its JSON too deeply to be a manifest; {REEXPORT}.") from err
    return manifest_from_dict(data, str(path))


def manifest_from_dict(data: dict, where: str = "manifest") -> Manifest:
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found == LEGACY_FORMAT:
        return _upgrade_v1(data, where)
    _expect(found == FORMAT, where, "manifest format", found,
            f"{FORMAT!r} (a manifest written by `python -m export.build` or `python -m export.tensorrt_build`)")
    kind = data.get("kind")
    _expect(kind in ("onnx", "engine"), f"{where}.kind", "the kind", kind, "'onnx' or 'engine'")
    return (OnnxManifest if kind == "onnx" else EngineManifest).from_dict(data, where)


def _upgrade_v1(data: dict, where: str) -> OnnxManifest:
    """Schema 1 (before engine manifests): the ONNX part maps 1:1; an engine inside it must be rebuilt."""
    if "engine" in data or "tensorrt" in data:
        raise ModelArtifactError(
            f"{where} is a schema-1 manifest that records a TensorRT engine inside the ONNX manifest; engines now "
            "have their own manifest. Re-export with `python -m export.build`, then rebuild the engine with "
            "`python -m export.tensorrt_build NAME.json`.")
    if os.environ.get(ALLOW_SCHEMA_1_ENV) != "1":
        raise ModelArtifactError(
            f"{where} is a schema-1 manifest: it has no checksum of its ONNX file, so a replaced file would run "
            f"unnoticed. {REEXPORT[0].upper()}{REEXPORT[1:]} (schema {SCHEMA_VERSION}), or set {ALLOW_SCHEMA_1_ENV}=1 "
            "to run it unverified.")
    upgraded = {k: v for k, v in data.items() if k not in ("parity", "accuracy", "format", "color", "layout")}
    upgraded["checks"] = {k: data[k] for k in ("parity", "accuracy") if k in data}
    try:
        manifest = OnnxManifest.from_dict(upgraded, where, legacy=True)
    except ModelArtifactError as err:
        raise ModelArtifactError(f"{err} (schema-1 manifest: {REEXPORT} to get a schema-{SCHEMA_VERSION} one)") from err
    log.warning("%s uses manifest schema 1; it was read without an ONNX checksum (%s=1). Re-export to upgrade it.",
                where, ALLOW_SCHEMA_1_ENV)
    return manifest


# --- validation helpers -------------------------------------------------------------------------------
def _expect(ok: bool, where: str, what: str, received, expected: str) -> None:
    if not ok:
        shown = json.dumps(received) if isinstance(received, (dict, list, str, int, float, type(None))) else received
        shown = shown if len(str(shown)) <= 200 else str(shown)[:200] + "..."
        raise ModelArtifactError(f"{where}: {what} is {shown}, expected {expected}; {REEXPORT}.")


def _field(data: dict, key: str, kind: type, where: str):
    value = data.get(key)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    _expect(ok, f"{where}.{key}", repr(key), value, f"a {kind.__name__}")
    return value


def _sha(data: dict, key: str, where: str) -> str:
    value = data.get(key)
    _expect(isinstance(value, str) and bool(_SHA256.match(value)), f"{where}.{key}", repr(key), value,
            "a sha256 hex digest")
    return value


def _tensors(data: dict, key: str, where: str) -> tuple[TensorSpec, ...]:
    entries = data.get(key)
    _expect(isinstance(entries, list) and bool(entries), f"{where}.{key}", repr(key), entries,
            "a non-empty list of {name, dtype, shape}")
    specs = tuple(TensorSpec.from_dict(e, f"{where}.{key}[{i}]") for i, e in enumerate(entries))
    names = [s.name for s in specs]
    _expect(len(set(names)) == len(names), f"{where}.{key}", "the names", names, "unique names")
    return specs


def _common_fields(data: dict, where: str) -> dict:
    batch = data.get("batch")
    _expect(isinstance(batch, dict), f"{where}.batch", "the batch profile", batch, "{min, opt, max}")
    try:
        profile = BatchProfile(batch.get("min"), batch.get("opt"), batch.get("max"))
    except ValueError as err:
        raise ModelArtifactError(f"{where}.batch: {err}; {REEXPORT}.") from err
    return {"model": _field(data, "model", str, where), "precision": _field(data, "precision", str, where),
            "inputs": _tensors(data, "inputs", where), "outputs": _tensors(data, "outputs", where),
            "batch": profile}


def _plain(manifest) -> dict:
    """Dataclass -> JSON-ready dict (tuples become lists, TensorSpec uses its JSON form)."""
    data = {}
    for f in fields(manifest):
        value = getattr(manifest, f.name)
        if f.name in ("inputs", "outputs"):
            value = [spec.to_dict() for spec in value]
        elif hasattr(value, "to_dict"):
            value = value.to_dict()
        elif hasattr(value, "__dataclass_fields__"):
            value = asdict(value)
        data[f.name] = _jsonable(value)
    return data


def _jsonable(value):
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value
