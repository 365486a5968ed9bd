"""`python -m export.tensorrt_build MANIFEST`: precision ONNX artifact -> TensorRT engine artifact.

    python -m export.tensorrt_build artifacts/dic_s2_fp16.json --timing-cache trt.cache
    python -m export.tensorrt_build artifacts/dic_s2_int8.json --legacy --fp32-onnx artifacts/dic_s2_fp32.onnx \
        --dla-core 0 --calibration-data calib.npz --calibration-cache calib.cache

Paths:
- strongly typed (TensorRT >= 10, default): NetworkDefinitionCreationFlag.STRONGLY_TYPED from the precision
  ONNX (fp16 casts / int8 Q/DQ decide the types), optimisation profile from the manifest's batch.
- legacy (TensorRT < 10, --legacy, or DLA): weakly typed from the fp32 ONNX with BuilderFlag.FP16, or INT8
  with an IInt8EntropyCalibrator2 that serves the calibration set and reads/writes the cache. Deprecated
  from TensorRT 10.12 (a warning is logged) and refused where the release has no such flags (TensorRT 11).
The engine is the plain serialized plan (no header). It gets its own manifest `NAME.engine.json`
(`runtime.contract.EngineManifest`: source artifact and checksum, TensorRT release, GPU, Jetson release,
builder path, profile); the ONNX manifest is never rewritten. Without TensorRT, `trtexec_command` gives
the command to compile the artifact on the target.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.contract import (
    BatchProfile, EngineManifest, EngineSource, OnnxManifest, TensorRTBuild, TensorSpec, engine_manifest_path,
    read_manifest, write_manifest,
)
from runtime.errors import ModelArtifactError
from runtime.files import sha256_of

from . import ExportError
from .provenance import package_versions, utc_now

log = logging.getLogger("export.tensorrt_build")

LEGACY_DEPRECATED_FROM = (10, 12)
HARDWARE_COMPAT = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def parse_version(text: str) -> tuple[int, int]:
    parts = str(text).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as err:
        raise ExportError(f"cannot read the TensorRT version {text!r}") from err


def _shape(spec: TensorSpec, n: int) -> tuple[int, ...]:
    return (n, *spec.shape[1:])


def trtexec_command(onnx_file: str, image_input: TensorSpec, batch: BatchProfile, engine_file: str | None = None,
                    workspace_mb: int = 1024, timing_cache: str = "timing.cache", opt_level: int = 3) -> str:
    """trtexec line for TensorRT >= 10 (strongly typed: the ONNX's own fp16 casts / Q/DQ set the types)."""
    engine_file = engine_file or str(Path(onnx_file).with_suffix(".engine"))
    s = lambda n: "x".join(map(str, _shape(image_input, n)))  # noqa: E731
    name = image_input.name
    return (f"trtexec --onnx={onnx_file} --saveEngine={engine_file} --stronglyTyped "
            f"--minShapes={name}:{s(batch.min)} --optShapes={name}:{s(batch.opt)} "
            f"--maxShapes={name}:{s(batch.max)} --memPoolSize=workspace:{workspace_mb}M "
            f"--timingCacheFile={timing_cache} --builderOptimizationLevel={opt_level}")


@dataclass
class EngineOptions:
    workspace_mb: int = 1024
    timing_cache: str | None = None  # file read before and written after the build
    opt_level: int = 3  # builder optimisation level 0..5
    hardware_compat: str = "none"  # none | ampere_plus | same_compute_capability
    legacy: bool = False  # force the weakly typed path
    dla_core: int | None = None  # DLA core (implies legacy, static shapes, GPU fallback)
    fp32_onnx: str | None = None  # legacy path: the fp32 ONNX to build from
    calibration_cache: str | None = None  # legacy int8


def choose_path(version: tuple[int, int], options: EngineOptions) -> str:
    """"strongly_typed" or "legacy" for this TensorRT version and options."""
    from .trt_support import release_for

    if options.dla_core is not None or options.legacy or version[0] < 10:
        release = release_for(version)
        if release is not None and not release.has_legacy_precision_flags:
            raise ExportError(f"TensorRT {version[0]}.{version[1]} has no weakly typed (legacy) builder path: "
                              "BuilderFlag.FP16/INT8 and the INT8 calibrators are gone. Build strongly typed from the "
                              "precision ONNX (drop --legacy)" + (" ; DLA needs TensorRT 10 on JetPack"
                                                                 if options.dla_core is not None else ""))
        if release is not None and options.dla_core is not None and not release.has_dla:
            raise ExportError(f"--dla-core: {release.name} has no DLA support; build for the GPU")
        if version >= LEGACY_DEPRECATED_FROM:
            log.warning("TensorRT %d.%d: weakly typed networks / implicit int8 are deprecated from 10.12", *version)
        return "legacy"
    return "strongly_typed"


# --- the steps of a build ---------------------------------------------------------------------------------
def _legacy_source(precision, batch: BatchProfile, options: EngineOptions, calibration) -> Path:
    """The fp32 ONNX the weakly typed path builds from, after checking what that path needs."""
    if not options.fp32_onnx:
        raise ExportError("the legacy (weakly typed) path builds from the fp32 ONNX: pass --fp32-onnx PATH "
                          "(export it with --precision fp32)")
    if options.dla_core is not None:
        if not precision.dla:
            raise ExportError(f"DLA runs fp16 or int8 only: use --precision fp16 or int8 with --dla-core "
                              f"(received {precision.name})")
        if not batch.is_static:
            raise ExportError(f"DLA needs static shapes: received --batch {batch}, expected MIN=OPT=MAX, "
                              f"e.g. {batch.opt}:{batch.opt}:{batch.opt}")
    if precision.needs_calibration and calibration is None:
        raise ExportError("legacy int8 needs a calibration set (--calibration-data calib.npz)")
    return Path(options.fp32_onnx)


def _network_from_onnx(trt, builder, logger, source: Path, strongly_typed: bool, version: tuple[int, int]):
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif version[0] < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes(), str(source)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            errors.append(f"node {e.node()} {e.node_name()!r} ({e.node_operator()}): {e.desc()}")
        raise ExportError(f"TensorRT {trt.__version__} cannot parse {source}:\n  " + "\n  ".join(errors))
    return network, parser  # the parser must outlive the network's build


def _builder_config(trt, builder, image_input: TensorSpec, batch: BatchProfile, options: EngineOptions):
    if options.hardware_compat not in HARDWARE_COMPAT:
        raise ExportError(f"--hardware-compat {options.hardware_compat!r}: expected one of {', '.join(HARDWARE_COMPAT)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    config.builder_optimization_level = options.opt_level
    if options.hardware_compat != "none":
        level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_COMPAT[options.hardware_compat], None)
        if level is None:
            raise ExportError(f"--hardware-compat {options.hardware_compat}: TensorRT {trt.__version__} does not "
                              "have it (SAME_COMPUTE_CAPABILITY needs 10.9 or newer)")
        config.hardware_compatibility_level = level
    cache_file = Path(options.timing_cache) if options.timing_cache else None
    timing = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(timing, False)
    profile = builder.create_optimization_profile()
    profile.set_shape(image_input.name, _shape(image_input, batch.min), _shape(image_input, batch.opt),
                      _shape(image_input, batch.max))
    config.add_optimization_profile(profile)
    return config, profile


def _legacy_precision(trt, config, profile, precision, version, options: EngineOptions, calibration, source: Path,
                      batch: BatchProfile, to_device) -> list[str]:
    """Builder flags (and the calibrator) of the weakly typed path; returns the flag names set."""
    flags = list(precision.legacy_trt_flags)
    if precision.needs_calibration:
        config.int8_calibrator = make_calibrator(trt, calibration, options.calibration_cache, sha256_of(source),
                                                 batch.opt, to_device)
        if version[0] < 10 or options.dla_core is not None:
            config.set_calibration_profile(profile)
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        flags.append("GPU_FALLBACK")
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    return flags


def _serialize(trt, builder, network, config, engine_path: Path, source: Path, options: EngineOptions) -> None:
    from runtime.files import write_bytes_atomic

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build the engine from {source} (see its log above)")
    write_bytes_atomic(engine_path, bytes(plan))
    if options.timing_cache:
        write_bytes_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()))


def build_engine(trt, onnx_path, engine_path, precision_name: str, image_input: TensorSpec, batch: BatchProfile,
                 options: EngineOptions = EngineOptions(), calibration: dict | None = None,
                 to_device=None) -> TensorRTBuild:
    """Build and write the engine; returns how it was built. `trt` is the tensorrt module."""
    from .precision import get_precision

    precision = get_precision(precision_name)
    version = parse_version(trt.__version__)
    path = choose_path(version, options)
    source = _legacy_source(precision, batch, options, calibration) if path == "legacy" else Path(onnx_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _network_from_onnx(trt, builder, logger, source, path == "strongly_typed", version)
    config, profile = _builder_config(trt, builder, image_input, batch, options)
    flags = _legacy_precision(trt, config, profile, precision, version, options, calibration, source, batch,
                              to_device) if path == "legacy" else []
    log.info("building TensorRT %s engine (%s, %s) from %s", trt.__version__, path, precision.name, source)
    _serialize(trt, builder, network, config, Path(engine_path), source, options)
    gpu, capability = gpu_info()
    l4t, jetpack = jetson_release()
    shapes = {"min": _shape(image_input, batch.min), "opt": _shape(image_input, batch.opt),
              "max": _shape(image_input, batch.max)}
    return TensorRTBuild(version=trt.__version__, network=path, gpu=gpu, compute_capability=capability,
                         jetpack=jetpack, l4t=l4t, builder_flags=tuple(flags),
                         profile={image_input.name: {k: list(v) for k, v in shapes.items()}},
                         options={**asdict(options), "source_onnx": source.name})


def make_calibrator(trt, calibration: dict, cache_path: str | None, model_sha256: str, batch: int, to_device=None):
    """IInt8EntropyCalibrator2 serving calibration["lr"] in batches, with the cache in calibration.cache."""
    from calibration import CalibrationError, StaleCacheError
    from calibration.cache import read_cache, write_cache

    lr = calibration["lr"]
    to_device = to_device or _torch_to_device

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()
            self.index = 0
            self.buffers = []  # keeps device memory alive until TensorRT has read it

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.index + batch > len(lr):
                return None
            chunk = lr[self.index:self.index + batch]
            self.index += batch
            pointer, keep = to_device(chunk)
            self.buffers = [keep]
            return [pointer]

        def read_calibration_cache(self):
            if not cache_path:
                return None
            try:
                return read_cache(cache_path, model_sha256, calibration["sha256"])
            except StaleCacheError as err:
                log.warning("%s", err)
                return None
            except CalibrationError as err:
                log.warning("%s; recalibrating", err)
                return None

        def write_calibration_cache(self, cache):
            if cache_path:
                write_cache(cache_path, bytes(cache), model_sha256, calibration["sha256"])

    return EntropyCalibrator()


def _torch_to_device(array):
    try:
        import torch
    except ImportError as err:
        raise ExportError("legacy int8 calibration copies batches to the GPU with torch (CUDA build)") from err
    tensor = torch.from_numpy(array).cuda()
    return int(tensor.data_ptr()), tensor


# --- where the engine is built ------------------------------------------------------------------------------
def gpu_info(device: int = 0) -> tuple[str | None, str | None]:
    """(GPU name, compute capability "8.7") through the runtime's CUDA API; (None, None) without a GPU."""
    try:
        from runtime.backends.cuda_api import load_cuda_api

        cuda = load_cuda_api(device)
        return cuda.device_name(), cuda.compute_capability()
    except Exception as err:  # noqa: BLE001 - informational; the engine records None
        log.warning("GPU name/compute capability unknown (%s); the engine manifest records none", err)
        return None, None


def parse_l4t(text: str) -> str | None:
    """'# R36 (release), REVISION: 4.0, ...' (the first line of /etc/nv_tegra_release) -> '36.4.0'."""
    import re

    match = re.match(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text.strip())
    return f"{match.group(1)}.{match.group(2)}" if match else None


def _package_version(name: str) -> str | None:
    import subprocess

    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", name], capture_output=True, text=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def jetson_release() -> tuple[str | None, str | None]:
    """(L4T release, JetPack version) on a Jetson, else (None, None). L4T from /etc/nv_tegra_release, or
    the nvidia-l4t-core package inside containers; JetPack from the nvidia-jetpack package (often absent)."""
    l4t = None
    if JETSON_RELEASE_FILE.is_file():
        lines = JETSON_RELEASE_FILE.read_text(errors="replace").splitlines()
        l4t = parse_l4t(lines[0]) if lines else None
    if l4t is None:
        core = _package_version("nvidia-l4t-core")  # e.g. 36.4.7-20250918154033
        l4t = core.split("-")[0] if core else None
    return l4t, _package_version("nvidia-jetpack") if l4t else None


# --- from an artifact to an engine artifact -----------------------------------------------------------------
def _onnx_artifact(manifest_path: Path) -> OnnxManifest:
    try:
        manifest = read_manifest(manifest_path)
    except ModelArtifactError as err:
        raise ExportError(str(err)) from err
    if not isinstance(manifest, OnnxManifest):
        raise ExportError(f"{manifest_path} is an engine manifest; pass the ONNX artifact's manifest (NAME.json)")
    return manifest


def build_engine_from_manifest(manifest_path, options: EngineOptions = EngineOptions(),
                               calibration_data: str | None = None, engine_path: str | None = None,
                               trt=None) -> Path:
    """Build the engine for an exported artifact and write its own manifest `NAME.engine.json`."""
    if trt is None:
        if not tensorrt_available():
            raise ExportError("TensorRT (the `tensorrt` Python package) is not installed here; compile on the "
                              "target with the trtexec command in the manifest")
        import tensorrt as trt
    manifest_path = Path(manifest_path)
    manifest = _onnx_artifact(manifest_path)
    onnx_path = manifest_path.parent / manifest.onnx
    if sha256_of(onnx_path) != manifest.onnx_sha256:
        raise ExportError(f"{onnx_path} does not match the checksum in {manifest_path.name}; re-export it")
    calibration = _calibration(calibration_data, manifest.inputs[0].shape[-1])
    engine_path = Path(engine_path) if engine_path else onnx_path.with_suffix(".engine")
    build = build_engine(trt, onnx_path, engine_path, manifest.precision, manifest.inputs[0], manifest.batch,
                         options, calibration)
    engine = EngineManifest(
        model=manifest.model, precision=manifest.precision, engine=engine_path.name,
        engine_sha256=sha256_of(engine_path),
        source=EngineSource(manifest_path.name, manifest.onnx, manifest.onnx_sha256),
        inputs=manifest.inputs, outputs=manifest.outputs, batch=manifest.batch, tensorrt=build,
        versions=package_versions(("fsr-edge", "tensorrt", "numpy")), created=utc_now())
    write_manifest(engine_manifest_path(engine_path), engine)
    return engine_path


def _calibration(calibration_data: str | None, input_size: int):
    if not calibration_data:
        return None
    from calibration import CalibrationError, load_set

    try:
        return load_set(calibration_data, input_size=input_size)[0]
    except CalibrationError as err:
        raise ExportError(str(err)) from err


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.tensorrt_build", description=__doc__.split("\n")[0])
    p.add_argument("manifest", help="the artifact's manifest .json (from python -m export.build)")
    p.add_argument("--engine", help="engine file to write (default: NAME.engine beside the ONNX)")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--timing-cache", default="timing.cache", help="reused between builds ('' = none)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6))
    p.add_argument("--hardware-compat", default="none", choices=sorted(HARDWARE_COMPAT))
    p.add_argument("--legacy", action="store_true", help="weakly typed build from --fp32-onnx (TensorRT < 11)")
    p.add_argument("--dla-core", type=int)
    p.add_argument("--fp32-onnx")
    p.add_argument("--calibration-data", help="legacy int8: calib.npz")
    p.add_argument("--calibration-cache", help="legacy int8: TensorRT calibration cache file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = EngineOptions(args.workspace_mb, args.timing_cache or None, args.opt_level, args.hardware_compat,
                            args.legacy, args.dla_core, args.fp32_onnx, args.calibration_cache)
    try:
        engine = build_engine_from_manifest(args.manifest, options, args.calibration_data, args.engine)
    except ExportError as err:
        log.error("%s", err)
        return 2
    print(f"engine:   {engine}")
    print(f"manifest: {engine_manifest_path(engine)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
