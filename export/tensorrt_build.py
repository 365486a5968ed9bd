"""`python -m export.tensorrt_build MANIFEST`: precision ONNX -> TensorRT engine (runs only where tensorrt imports).

    python -m export.tensorrt_build artifacts/dic_s8_fp16.json --timing-cache trt.cache
    python -m export.tensorrt_build artifacts/dic_s8_int8.json --legacy --fp32-onnx artifacts/dic_s8_fp32.onnx \
        --dla-core 0 --calibration-cache calib.cache

Paths:
- strongly typed (TensorRT >= 10, default): NetworkDefinitionCreationFlag.STRONGLY_TYPED from the precision
  ONNX (fp16 casts / int8 Q/DQ decide the types), optimisation profile from the manifest's batch.
- legacy (TensorRT < 10, --legacy, or DLA): weakly typed from the fp32 ONNX with BuilderFlag.FP16, or INT8
  with an IInt8EntropyCalibrator2 that serves the calibration set and reads/writes the cache. Implicit
  quantisation is deprecated from TensorRT 10.12 (a warning is logged there). DLA needs static shapes.
The engine is the plain serialized plan (no header); the manifest gets a "tensorrt" section.
Without TensorRT, `trtexec_command` gives the command to compile the artifact on the target.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import ExportError

log = logging.getLogger("export.tensorrt_build")

INPUT_NAME = "lr"
LEGACY_DEPRECATED_FROM = (10, 12)
HARDWARE_COMPAT = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}


def tensorrt_available() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def parse_version(text: str) -> tuple[int, int]:
    parts = str(text).split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError as err:
        raise ExportError(f"cannot read the TensorRT version {text!r}") from err


def _shape(n: int, size: int = 16) -> tuple[int, int, int, int]:
    return (n, 3, size, size)


def trtexec_command(onnx_name: str, batch, precision: str, engine_name: str | None = None,
                    workspace_mb: int = 1024, timing_cache: str = "timing.cache", opt_level: int = 3) -> str:
    """trtexec line for TensorRT >= 10 (strongly typed: the ONNX's own fp16 casts / Q/DQ set the types)."""
    engine_name = engine_name or str(Path(onnx_name).with_suffix(".engine"))
    s = lambda n: "x".join(map(str, _shape(n)))  # noqa: E731
    return (f"trtexec --onnx={onnx_name} --saveEngine={engine_name} --stronglyTyped "
            f"--minShapes={INPUT_NAME}:{s(batch.min)} --optShapes={INPUT_NAME}:{s(batch.opt)} "
            f"--maxShapes={INPUT_NAME}:{s(batch.max)} --memPoolSize=workspace:{workspace_mb}M "
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
    if options.dla_core is not None or options.legacy or version[0] < 10:
        if version >= LEGACY_DEPRECATED_FROM:
            log.warning("TensorRT %d.%d: weakly typed networks / implicit int8 are deprecated from 10.12", *version)
        return "legacy"
    return "strongly_typed"


def build_engine(trt, onnx_path, engine_path, precision: str, batch, options: EngineOptions = EngineOptions(),
                 calibration: dict | None = None, to_device=None) -> dict:
    """Build and write the engine; returns the manifest's "tensorrt" section. `trt` is the tensorrt module."""
    version = parse_version(trt.__version__)
    path = choose_path(version, options)
    if options.hardware_compat not in HARDWARE_COMPAT:
        raise ExportError(f"--hardware-compat {options.hardware_compat!r}: expected one of {', '.join(HARDWARE_COMPAT)}")
    if path == "legacy":
        if not options.fp32_onnx:
            raise ExportError("the legacy (weakly typed) path builds from the fp32 ONNX: pass --fp32-onnx PATH "
                              "(export it with --precision fp32)")
        source = Path(options.fp32_onnx)
        if options.dla_core is not None:
            if precision == "fp32":
                raise ExportError("DLA runs fp16 or int8 only: use --precision fp16 or int8 with --dla-core")
            if not batch.min == batch.opt == batch.max:
                raise ExportError(f"DLA needs static shapes: received --batch {batch.min}:{batch.opt}:{batch.max}, "
                                  f"expected MIN=OPT=MAX, e.g. {batch.opt}:{batch.opt}:{batch.opt}")
        if precision == "int8" and calibration is None:
            raise ExportError("legacy int8 needs a calibration set (--calibration-data calib.npz)")
    else:
        source = Path(onnx_path)

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if path == "strongly_typed":
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

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    config.builder_optimization_level = options.opt_level
    if options.hardware_compat != "none":
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel,
                                                      HARDWARE_COMPAT[options.hardware_compat])
    cache_file = Path(options.timing_cache) if options.timing_cache else None
    timing = config.create_timing_cache(cache_file.read_bytes() if cache_file and cache_file.is_file() else b"")
    config.set_timing_cache(timing, False)

    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, _shape(batch.min), _shape(batch.opt), _shape(batch.max))
    config.add_optimization_profile(profile)

    builder_flags = []
    if path == "legacy":
        if precision in ("fp16", "int8"):
            builder_flags.append("FP16")
        if precision == "int8":
            builder_flags.append("INT8")
            config.int8_calibrator = make_calibrator(trt, calibration, options.calibration_cache,
                                                     _sha256(source), batch.opt, to_device)
            if version[0] < 10 or options.dla_core is not None:
                config.set_calibration_profile(profile)
        if options.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = options.dla_core
            builder_flags.append("GPU_FALLBACK")
        for name in builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))

    log.info("building TensorRT %s engine (%s, %s) from %s", trt.__version__, path, precision, source)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT {trt.__version__} failed to build the engine from {source} (see its log above)")
    engine_path = Path(engine_path)
    tmp = engine_path.with_name(f".{engine_path.name}.tmp")
    tmp.write_bytes(bytes(plan))
    from .manifest import publish_file

    publish_file(tmp, engine_path)
    if cache_file:
        cache_file.write_bytes(bytes(config.get_timing_cache().serialize()))
    gpu, capability = _gpu()
    return {
        "engine": engine_path.name, "tensorrt_version": trt.__version__, "gpu": gpu,
        "compute_capability": capability, "network": path, "source_onnx": source.name,
        "builder_flags": builder_flags, "profile": {INPUT_NAME: {"min": _shape(batch.min), "opt": _shape(batch.opt),
                                                                "max": _shape(batch.max)}},
        "options": asdict(options),
    }


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


def _gpu() -> tuple[str | None, str | None]:
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except Exception:  # noqa: BLE001 - informational only
        pass
    return None, None


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_engine_from_manifest(manifest_path, options: EngineOptions = EngineOptions(),
                               calibration_data: str | None = None) -> Path:
    """Build the engine for an exported artifact and add the "tensorrt" section to its manifest."""
    from .build import BatchProfile
    from .manifest import read_manifest, write_json_atomic

    if not tensorrt_available():
        raise ExportError("TensorRT (the `tensorrt` Python package) is not installed here; compile on the target "
                          "with the trtexec command in the manifest")
    import tensorrt as trt

    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path)
    batch = BatchProfile(**manifest["batch"])
    onnx_path = manifest_path.parent / manifest["onnx"]
    calibration = None
    if calibration_data:
        from calibration import CalibrationError, load_set

        try:
            calibration = load_set(calibration_data)[0]
        except CalibrationError as err:
            raise ExportError(str(err)) from err
    engine_path = onnx_path.with_suffix(".engine")
    manifest["tensorrt"] = build_engine(trt, onnx_path, engine_path, manifest["precision"], batch, options,
                                        calibration)
    write_json_atomic(manifest_path, manifest)
    return engine_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m export.tensorrt_build", description=__doc__.split("\n")[0])
    p.add_argument("manifest", help="the artifact's manifest .json (from python -m export.build)")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--timing-cache", default="timing.cache", help="reused between builds ('' = none)")
    p.add_argument("--opt-level", type=int, default=3, choices=range(6))
    p.add_argument("--hardware-compat", default="none", choices=sorted(HARDWARE_COMPAT))
    p.add_argument("--legacy", action="store_true", help="weakly typed build from --fp32-onnx")
    p.add_argument("--dla-core", type=int)
    p.add_argument("--fp32-onnx")
    p.add_argument("--calibration-data", help="legacy int8: calib.npz")
    p.add_argument("--calibration-cache", help="legacy int8: TensorRT calibration cache file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = EngineOptions(args.workspace_mb, args.timing_cache or None, args.opt_level, args.hardware_compat,
                            args.legacy, args.dla_core, args.fp32_onnx, args.calibration_cache)
    try:
        engine = build_engine_from_manifest(args.manifest, options, args.calibration_data)
    except ExportError as err:
        log.error("%s", err)
        return 2
    print(f"engine: {engine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
