"""`python -m export.build`: model -> unrolled ONNX, verified against PyTorch, plus a manifest.

    python -m export.build --model dic --precision fp32
    python -m export.build --model dic --weights DIC_CelebA.pth --steps 2 --with-landmarks
    python -m export.build --model dic --random-init --config small --outdir /tmp/out

Every artifact is checked before it is published: ONNX checker, then the runtime's ONNX Runtime backend
against PyTorch on real face crops (max abs error <= 1e-4 for fp32, every value finite), the precision's
accuracy gate, and the offline TensorRT compatibility check. Files are written under temporary names and
renamed only when all checks pass, so a failed export never leaves or overwrites files. The manifest
(`runtime.contract.OnnxManifest`) is published last and never rewritten.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runtime.contract import BatchProfile, OnnxManifest, TensorSpec, WeightsInfo, write_manifest
from runtime.files import sha256_of

from . import ExportError
from .provenance import package_versions, utc_now
from .precision import PrecisionOptions, gate_summary, make_precision_onnx, with_model_defaults

log = logging.getLogger("export.build")

PARITY_FACES = 16
PARITY_FACES_LARGE = 2  # outputs above 256 px (Panini's 1024 px): batch 1 and 2, minutes instead of an hour
TILING_FACES = 8  # face regions 2.5 inputs wide for the tiling check (local models)
ACCURACY_GATES = ("fail", "warn", "off")


@dataclass(frozen=True)
class BuildResult:
    onnx_path: Path
    manifest_path: Path
    manifest: OnnxManifest


# --- steps of the build ---------------------------------------------------------------------------


def _resolve_weights(model_name: str, weights: str | None, random_init: bool) -> Path | None:
    from models import model_spec, shipped_weights

    try:
        model_spec(model_name)  # an unknown name is one clear error, whatever else was given
    except ValueError as err:
        raise ExportError(str(err)) from err
    if weights and random_init:
        raise ExportError("give either --weights or --random-init, not both")
    if weights:
        return Path(weights)
    if random_init:
        return None
    shipped = shipped_weights(model_name)
    if shipped is None:
        raise ExportError(
            f"no trained weights are shipped for {model_name!r} yet. Pass --weights PATH (an official "
            f"{model_name.upper()} .pth checkpoint or a safetensors file) or --random-init to export random weights "
            "(pipeline testing only: the output will be noise)."
        )
    log.info("using shipped weights %s", shipped)
    return shipped


def _load_model(model_name: str, config, weights: Path | None):
    """(model, its declared ModelIO); unknown model/config and bad weights become ExportError."""
    from models import WeightsError, create_model, model_io

    try:
        model = create_model(model_name, config=config, weights=weights)
        return model, model_io(model_name, model.config)
    except (WeightsError, ValueError) as err:  # WeightsError: file problems; ValueError: unknown model / config
        raise ExportError(str(err)) from err


def _check_request(io, steps: int | None, extras: tuple[str, ...]) -> int | None:
    try:
        steps = io.steps_or_default(steps)
        for name in extras:
            io.extra(name)
    except ValueError as err:
        raise ExportError(str(err)) from err
    return steps


def _prepare_outdir(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=outdir):
            pass
    except OSError as err:
        raise ExportError(f"output folder {outdir} is not writable ({err.strerror}); choose another --outdir") from err


EXTRA_SUFFIXES = {"landmarks": "_lm", "boundaries": "_bd"}


CAMERA_SUFFIX = "_camera"  # the camera-grade twin's artifact name: pfsr_camera_fp16, dic_camera_s2_fp32
FUSED_SUFFIX = "_fused"  # the fused-grade twin's: pfsr_fused_fp16
# Twins exported beside a default with shipped weights: role -> (artifact name suffix, the registry's function
# that finds its weights, what the runtime does with it)
TWINS = {"camera": (CAMERA_SUFFIX, "camera_grade_weights", "loaded with it; the runtime picks per face"),
         "fused": (FUSED_SUFFIX, "fused_grade_weights", "loaded with it under --fuse-frames, for fused faces")}


def artifact_name(model_name: str, steps: int | None, precision: str, extras: tuple[str, ...] = (),
                  suffix: str = "") -> str:
    """e.g. dic_s2_fp16, dic_s4_fp32_lm, msfsr_fp16_bd, pfsr_int8, pfsr_camera_fp32 (no step count for a model
    that is not recurrent)."""
    step_part = f"_s{steps}" if steps is not None else ""
    return f"{model_name.lower()}{suffix}{step_part}_{precision}" + "".join(EXTRA_SUFFIXES[name] for name in extras)


def declared_io(io, extras: tuple[str, ...] = ()) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's inputs and outputs, from the model's declaration (models.io.ModelIO)."""
    from models.io import IMAGE_OUTPUT_NAME, INPUT_NAME

    inputs = (TensorSpec(INPUT_NAME, "float32", ("N", 3, io.input_size, io.input_size), (0.0, 1.0)),)
    outputs = [TensorSpec(IMAGE_OUTPUT_NAME, "float32", ("N", 3, io.output_size, io.output_size), (0.0, 1.0))]
    for name in extras:
        extra = io.extra(name)
        outputs.append(TensorSpec(extra.name, "float32", ("N", *extra.shape), extra.value_range))
    return inputs, tuple(outputs)


def build(model_name: str, *, weights: str | None = None, random_init: bool = False, config=None,
          steps: int | None = None, precision: str = "fp32", batch: BatchProfile = BatchProfile(),
          with_landmarks: bool = False, with_boundaries: bool = False, opset: int | None = None,
          outdir: str | os.PathLike = "artifacts",
          options: PrecisionOptions = PrecisionOptions(), trt_targets: tuple[str, ...] | None = None,
          name_suffix: str = "", camera_grade: str | None = None, fused_grade: str | None = None) -> BuildResult:
    """Export, verify and publish one artifact. Raises ExportError; never leaves partial files.
    `camera_grade` / `fused_grade`: the manifest file names of this artifact's camera-grade and fused-grade
    twins, already published beside it."""
    from runtime.files import atomic_path

    from .onnx_export import DEFAULT_OPSET, UnrolledSR, check_onnx, file_opset, onnx_from_model
    from .precision import get_precision
    from .trt_compat import check_tensorrt_compat, check_targets

    row = get_precision(precision)
    trt_targets = check_targets(trt_targets)
    if options.accuracy_gate not in ACCURACY_GATES:
        raise ExportError(f"--accuracy-gate {options.accuracy_gate!r}: expected one of {', '.join(ACCURACY_GATES)}")
    if options.gate_images < 1:
        raise ExportError(f"--gate-images {options.gate_images}: expected a positive number of images")
    model_name = model_name.lower()
    weights_path = _resolve_weights(model_name, weights, random_init)
    model, io = _load_model(model_name, config, weights_path)
    extras = ("landmarks",) * with_landmarks + ("boundaries",) * with_boundaries
    steps = _check_request(io, steps, extras)
    calibration = _load_calibration(options, io.input_size) if row.needs_calibration else None
    outdir = Path(outdir)
    _prepare_outdir(outdir)

    name = artifact_name(model_name, steps, row.name, extras, name_suffix)
    onnx_path, manifest_path = outdir / f"{name}.onnx", outdir / f"{name}.json"
    inputs, outputs = declared_io(io, extras)
    wrapper = UnrolledSR(model, steps, extras, fuse=io.folds_batchnorm)
    reference = UnrolledSR(model, steps, extras, fuse=False)  # parity is checked against the model as trained
    with atomic_path(onnx_path) as published, tempfile.TemporaryDirectory(prefix="fsr-export-") as work:
        fp32_path = published if row.convert is None else Path(work) / "fp32.onnx"
        log.info("exporting %s (%s) to ONNX", model_name, f"{steps} steps" if steps else "not recurrent")
        onnx_from_model(wrapper, fp32_path, inputs, outputs, opset=DEFAULT_OPSET if opset is None else opset)
        check_onnx(fp32_path)
        fp32, parity = _verified(reference, fp32_path, inputs, outputs, batch)
        checks, conversion = {"parity": parity}, {}
        tiling = None
        if io.local and not extras:
            checks["tiling"] = _tiling_check(reference, fp32)
            tiling = checks["tiling"].pop("tiling", None)
        if row.convert is not None:
            options = with_model_defaults(options, row, io, fp32_path)
            conversion, checks["accuracy"] = make_precision_onnx(fp32, published, row, options, calibration)
        checks["tensorrt_compat"] = check_tensorrt_compat(published, trt_targets)
        manifest = OnnxManifest(
            model=model_name, precision=row.name, onnx=onnx_path.name, onnx_sha256=sha256_of(published),
            opset=file_opset(published), inputs=inputs, outputs=outputs, batch=batch,
            weights=_weights_info(weights_path), min_input_ratio=_trained_min_input_ratio(weights_path), tiling=tiling,
            recording_gate=_recording_gate(weights_path), camera_grade=camera_grade,
            fused_input=_fused_input(weights_path), fused_grade=fused_grade,
            scale=io.scale, steps=steps, max_steps=io.recurrent_steps,
            config=model.config.to_dict(), batchnorm_folded=io.folds_batchnorm, checks=checks,
            precision_conversion=conversion, trtexec=trtexec_hint(onnx_path.name, inputs[0], batch),
            versions=package_versions(), created=utc_now())
    write_manifest(manifest_path, manifest)
    return BuildResult(onnx_path, manifest_path, manifest)


def _verified(reference, onnx_path: Path, inputs, outputs, batch: BatchProfile):
    """(artifact, parity result) after checking ONNX Runtime (runtime backend) against PyTorch."""
    from .inputs import face_inputs
    from .verify import onnx_artifact, verify_parity

    artifact = onnx_artifact(onnx_path, inputs, outputs, batch)
    count = PARITY_FACES if artifact.output_hw[0] <= 256 else PARITY_FACES_LARGE
    faces, source = face_inputs(count, lr_size=artifact.input_hw[0])
    parity = verify_parity(reference, artifact, faces, source)
    if not parity["passed"]:
        raise ExportError(f"ONNX Runtime does not match PyTorch: {parity}. Nothing was written.")
    return artifact, parity


def _tiling_check(reference, artifact) -> dict:
    """May the runtime run this model tile by tile on faces at their recorded size? (`runtime.tiles`)"""
    from .inputs import face_inputs
    from .verify import check_tiling

    side = artifact.input_hw[0] * 5 // 2  # tiles at the region's edges, in its middle, and a short last step
    regions, source = face_inputs(TILING_FACES, lr_size=side)
    result = check_tiling(reference, artifact, regions, source)
    log.info("tiling check: tiled vs whole %.1f dB (%s)", result["psnr_db"], "passed" if result["passed"] else
             "FAILED: the runtime will resize faces to the input")
    return result


def _trained_min_input_ratio(path: Path | None) -> float | None:
    """The smallest face (fraction of the input side) the weights were trained on, from their metadata."""
    from models.weights import read_metadata

    value = read_metadata(path).get("min_input_ratio") if path is not None else None
    if value is None:
        return None
    try:
        ratio = float(value)
    except ValueError:
        ratio = math.nan
    if not 0 < ratio <= 1:
        raise ExportError(f"{path}: metadata min_input_ratio {value!r} is not a number in (0, 1]")
    return ratio


def _recording_gate(path: Path | None) -> dict | None:
    """The per-face gate stored in camera-grade weights (`calibration.recording_gate --write`), checked."""
    from calibration.recording_gate import read_gate

    try:
        gate = read_gate(path) if path is not None else None
    except ValueError as err:
        raise ExportError(f"{err}; refit it with `python -m calibration.recording_gate --write`") from err
    return None if gate is None else gate.to_dict()


def _fused_input(path: Path | None) -> dict | None:
    """{"burst": N} for weights trained on fused bursts (`training.train --burst N`, in their metadata)."""
    from models.weights import read_metadata

    text = read_metadata(path).get("degradation") if path is not None else None
    try:
        burst = json.loads(text).get("burst") if text else None
    except (json.JSONDecodeError, AttributeError) as err:
        raise ExportError(f"{path}: metadata degradation {text!r} is not a JSON object") from err
    if burst is None:
        return None
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 2:
        raise ExportError(f"{path}: metadata degradation.burst {burst!r} is not a frame count >= 2")
    return {"burst": burst}


def _weights_info(path: Path | None) -> WeightsInfo:
    return WeightsInfo(str(path), sha256_of(path)) if path else WeightsInfo()


def _load_calibration(options: PrecisionOptions, input_size: int):
    """The int8 calibration set: --calibration-data, else the default set from the UTK train split."""
    from calibration import CalibrationError, load_set
    from calibration.collect import default_set

    try:
        if options.calibration_data:
            return load_set(options.calibration_data, input_size=input_size)
        return default_set(input_size=input_size)
    except CalibrationError as err:
        raise ExportError(str(err)) from err


def trtexec_hint(onnx_file: str, image_input: TensorSpec, batch: BatchProfile) -> str:
    """The trtexec command that compiles this artifact on the target (TensorRT >= 10, strongly typed)."""
    from .tensorrt_build import trtexec_command

    return trtexec_command(onnx_file, image_input, batch)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    from models import list_models

    from .precision import PRECISIONS
    from .trt_support import RELEASES as TRT_RELEASES

    p = argparse.ArgumentParser(prog="python -m export.build", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())} (any case)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="weights file (.safetensors, or official .pth/.pt); default: shipped weights")
    src.add_argument("--random-init", action="store_true", help="export random weights (pipeline tests only)")
    p.add_argument("--config", help="architecture config name (default: the paper's, or the one stored in --weights)")
    p.add_argument("--steps", type=int, help="recurrent models only: steps to unroll (default: all)")
    p.add_argument("--precision", default="fp32", type=str.lower, choices=list(PRECISIONS))
    p.add_argument("--batch", default="1:8:32", help="dynamic batch profile MIN:OPT:MAX (default 1:8:32)")
    p.add_argument("--with-landmarks", action="store_true", help="also output landmarks [N,K,2] in output pixels")
    p.add_argument("--with-boundaries", action="store_true",
                   help="MSFSR: also output the last stage's 11 facial boundary maps [N,11,S,S]")
    p.add_argument("--opset", type=int, help="ONNX opset (default 18)")
    p.add_argument("--outdir", default="artifacts", help="output folder (default: ./artifacts)")
    p.add_argument("--accuracy-gate", default="fail", choices=ACCURACY_GATES,
                   help="fp16/int8: fail (default) or warn when Y-PSNR drops more than allowed; off skips it")
    p.add_argument("--gate-images", type=int, default=200, help="val images for the accuracy gate (default 200)")
    p.add_argument("--calibration", default="entropy", choices=("entropy", "max"), help="int8 calibration method")
    p.add_argument("--calibration-data", help="int8: calib.npz from `python -m calibration.collect` "
                   "(default: 512 faces of the UTK train split)")
    p.add_argument("--exclude-op-types", help="comma-separated op types kept in fp32 (default fp16: "
                   "Resize,ReduceMax,Div,Softmax,ArgMax; int8: Resize)")
    p.add_argument("--exclude-nodes", default="", help="comma-separated node names kept in fp32")
    p.add_argument("--trt-targets", help="comma-separated TensorRT releases the graph must parse on "
                   f"(default: all of {', '.join(TRT_RELEASES)}); checked offline, no TensorRT needed")
    p.add_argument("--no-camera-grade", dest="camera_grade", action="store_false",
                   help="with the shipped weights, do not also export their camera-grade twin (pfsr, pfsr_x4, dic: "
                        "weights trained on noisy, compressed recordings, which the runtime picks per face)")
    p.add_argument("--no-fused-grade", dest="fused_grade", action="store_false",
                   help="with the shipped weights, do not also export their fused-grade twin (pfsr: weights trained "
                        "on faces fused over a burst of frames, which the runtime uses with --fuse-frames)")
    p.add_argument("--tensorrt", action="store_true", help="also build a TensorRT engine (needs tensorrt)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _exit_cleanly_on_sigterm() -> None:
    """SIGTERM (systemd, Docker, a CI timeout) leaves the export like Ctrl-C does: through the `finally` blocks
    that delete its temporary files, so a stopped export leaves nothing behind."""
    def stop(signum, _frame):
        log.error("stopped by signal %d: nothing was published", signum)
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():  # (called as a library from another thread: skip)
        signal.signal(signal.SIGTERM, stop)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Our loggers at INFO; third-party exporters (onnxscript, onnx_ir) stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("export", "models", "calibration"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    _exit_cleanly_on_sigterm()
    try:
        common = dict(
            config=args.config, steps=args.steps, precision=args.precision, batch=_batch(args.batch),
            with_landmarks=args.with_landmarks, with_boundaries=args.with_boundaries, opset=args.opset,
            outdir=args.outdir,
            options=PrecisionOptions(
                accuracy_gate=args.accuracy_gate, gate_images=args.gate_images, calibration=args.calibration,
                calibration_data=args.calibration_data,
                exclude_op_types=None if args.exclude_op_types is None else _split(args.exclude_op_types),
                exclude_nodes=_split(args.exclude_nodes)),
            trt_targets=_split(args.trt_targets) if args.trt_targets else None)
        twins = {role: _twin(args, common, role) for role in TWINS}
        result = build(args.model, weights=args.weights, random_init=args.random_init, **common,
                       **{f"{role}_grade": twin.manifest_path.name for role, twin in twins.items() if twin})
    except ExportError as err:
        log.error("%s", err)
        return 2
    _print_result(result)
    for role, twin in twins.items():
        if twin is not None:
            print(f"{role}-grade twin: {twin.manifest_path} ({TWINS[role][2]})")
    built = [twin for twin in twins.values() if twin] + [result]
    return max(_tensorrt_step(artifact, args.tensorrt) for artifact in built)


def _twin(args, common: dict, role: str) -> BuildResult | None:
    """With the shipped default weights, their camera-grade and fused-grade twins are exported first (the
    default artifact's manifest names them, so the runtime loads them too)."""
    import models

    suffix, finder, _ = TWINS[role]
    if not getattr(args, f"{role}_grade") or args.weights or args.random_init:
        return None
    try:
        weights = getattr(models, finder)(args.model)
    except ValueError:
        return None  # an unknown model: build() says so
    if weights is None:
        return None
    log.info("exporting the %s-grade twin %s (--no-%s-grade: without it)", role, weights.name, role)
    twin = build(args.model, weights=str(weights), name_suffix=suffix, **common)
    _print_result(twin)
    return twin


def _batch(text: str) -> BatchProfile:
    try:
        return BatchProfile.parse(text)
    except ValueError as err:
        raise ExportError(f"--batch: {err}") from err


def _print_result(result: BuildResult) -> None:
    from .trt_compat import compat_summary

    manifest = result.manifest
    parity = manifest.checks["parity"]
    print(f"onnx:     {result.onnx_path}")
    print(f"manifest: {result.manifest_path}")
    print(f"parity:   max |onnxruntime - torch| = {parity['sr_max_abs_error']:.2e} on {parity['inputs']} "
          f"({parity['runtime']})")
    gate = manifest.checks.get("accuracy")
    if gate and not gate.get("skipped"):
        print(f"accuracy: {gate_summary(manifest.precision, gate)} -> {'passed' if gate['passed'] else 'FAILED (warn)'}")
    tiled = manifest.checks.get("tiling")
    if tiled:
        use = "faces run at their recorded size, tile by tile" if manifest.tiling else "faces resized to the input"
        print(f"tiling:   tiled vs whole image {tiled['psnr_db']:.1f} dB (needs {tiled['min_psnr_db']:.0f}) -> {use}")
    print(f"tensorrt-compat: {compat_summary(manifest.checks['tensorrt_compat'])}")


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _tensorrt_step(result: BuildResult, wanted: bool) -> int:
    """Build the engine when TensorRT is importable; otherwise print the trtexec command for the target."""
    from .tensorrt_build import tensorrt_available

    if not tensorrt_available():
        image_input = result.manifest.inputs[0]
        print("tensorrt: not found here; compile on the target with:")
        print(f"  {trtexec_hint(str(result.onnx_path), image_input, result.manifest.batch)}")
        return 3 if wanted else 0
    if not wanted:
        print(f"tensorrt: available; build with: python -m export.tensorrt_build {result.manifest_path}")
        return 0
    from .tensorrt_build import build_engine_from_manifest

    try:
        engine = build_engine_from_manifest(result.manifest_path)
    except ExportError as err:
        log.error("%s", err)
        return 2
    print(f"engine:   {engine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
