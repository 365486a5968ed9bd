"""`python -m export.build`: model -> unrolled ONNX, verified against PyTorch, plus a manifest.

    python -m export.build --model dic --precision fp32
    python -m export.build --model dic --weights DIC_CelebA.pth --steps 2 --with-landmarks
    python -m export.build --model dic --random-init --config small --outdir /tmp/out

Every artifact is checked before it is published: ONNX checker, then ONNX Runtime (CPU) against
PyTorch on real face crops (max abs error <= 1e-4 for fp32). Files are written under temporary
names and renamed only when all checks pass, so a failed export never leaves or overwrites files.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import ExportError

log = logging.getLogger("export.build")

PRECISIONS = ("fp32", "fp16", "int8")
FP32_TOLERANCE = 1e-4
LANDMARK_AGREEMENT = 0.99  # share of landmark points whose arg-max must be identical
PARITY_FACES = 16
ACCURACY_GATES = ("fail", "warn", "off")


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT-style optimisation profile for the dynamic batch axis."""

    min: int = 1
    opt: int = 8
    max: int = 32

    @classmethod
    def parse(cls, text: str) -> "BatchProfile":
        try:
            values = [int(v) for v in text.split(":")]
        except ValueError:
            values = []
        if len(values) == 1:
            values = [1, values[0], values[0]]
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise ExportError(f"--batch {text!r}: expected MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, e.g. 1:8:32")
        return cls(*values)

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class PrecisionOptions:
    """What --precision fp16/int8 needs besides the fp32 export (ignored for fp32)."""

    accuracy_gate: str = "fail"  # fail | warn | off
    gate_images: int = 200
    calibration: str = "entropy"  # int8: entropy | max
    calibration_data: str | None = None  # int8: calib.npz from `python -m calibration.collect`
    exclude_op_types: tuple[str, ...] | None = None  # None: the precision's defaults
    exclude_nodes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BuildResult:
    onnx_path: Path
    manifest_path: Path
    manifest: dict


# --- steps of the build ---------------------------------------------------------------------------


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def _resolve_weights(model_name: str, weights: str | None, random_init: bool) -> Path | None:
    from models import shipped_weights

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
    from models import WeightsError, create_model

    try:
        return create_model(model_name, config=config, weights=weights)
    except WeightsError as err:
        raise ExportError(str(err)) from err
    except ValueError as err:  # unknown model / config
        raise ExportError(str(err)) from err


def _check_steps(model, steps: int | None) -> int:
    max_steps = model.config.num_steps
    steps = max_steps if steps is None else steps
    if not 1 <= steps <= max_steps:
        raise ExportError(f"--steps {steps} is out of range: this model unrolls 1..{max_steps} steps")
    return steps


def _prepare_outdir(outdir: Path) -> None:
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=outdir):
            pass
    except OSError as err:
        raise ExportError(f"output folder {outdir} is not writable ({err.strerror}); choose another --outdir") from err


def artifact_name(model_name: str, steps: int, precision: str, with_landmarks: bool) -> str:
    return f"{model_name}_s{steps}_{precision}" + ("_lm" if with_landmarks else "")


def verify_parity(wrapper, onnx_path: Path) -> dict:
    """Compare ONNX Runtime (CPU) with PyTorch on real faces, at two batch sizes."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from .inputs import face_inputs

    faces, source = face_inputs(PARITY_FACES)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    sr_error, landmark_agree, landmark_error = 0.0, [], 0.0
    for batch in (faces[:1], faces):
        onnx_out = dict(zip(names, session.run(None, {"lr": batch})))
        with torch.no_grad():
            torch_out = wrapper(torch.from_numpy(batch))
        torch_out = [t.numpy() for t in (torch_out if isinstance(torch_out, tuple) else (torch_out,))]
        sr_error = max(sr_error, float(np.abs(onnx_out["sr"] - torch_out[0]).max()))
        if "landmarks" in onnx_out:
            same = np.all(onnx_out["landmarks"] == torch_out[1], axis=-1)
            landmark_agree.append(float(same.mean()))
            landmark_error = max(landmark_error, float(np.abs(onnx_out["landmarks"] - torch_out[1]).max()))
    result = {
        "inputs": source, "faces": int(len(faces)), "batch_sizes": [1, int(len(faces))],
        "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider",
        "sr_max_abs_error": sr_error, "tolerance": FP32_TOLERANCE,
    }
    if landmark_agree:
        result["landmarks_identical_share"] = min(landmark_agree)
        result["landmarks_max_abs_error_px"] = landmark_error
    result["passed"] = sr_error <= FP32_TOLERANCE and min(landmark_agree, default=1.0) >= LANDMARK_AGREEMENT
    return result


def _manifest(model_name, model, steps, precision, batch, with_landmarks, opset, weights, onnx_name, parity):
    from models.weights import sha256_of

    from .manifest import FORMAT, io_spec, package_versions, utc_now
    from .onnx_export import INPUT_NAME, LANDMARKS_NAME, SR_NAME

    size_in, size_out = 16, 16 * model.config.scale
    outputs = [io_spec(SR_NAME, ["N", 3, size_out, size_out], (0, 1))]
    if with_landmarks:
        outputs.append(io_spec(LANDMARKS_NAME, ["N", model.config.hg_num_keypoints, 2], (0, size_out)))
    return {
        "format": FORMAT,
        "model": model_name,
        "config": model.config.to_dict(),
        "batchnorm_folded": hasattr(model, "fused"),
        "steps": steps,
        "max_steps": model.config.num_steps,
        "precision": precision,
        "scale": model.config.scale,
        "onnx": onnx_name,
        "opset": opset,
        "inputs": [io_spec(INPUT_NAME, ["N", 3, size_in, size_in], (0, 1))],
        "outputs": outputs,
        "color": "RGB",
        "layout": "NCHW",
        "batch": batch.to_dict(),
        "weights": {"path": str(weights), "sha256": sha256_of(weights)} if weights else {"random_init": True},
        "parity": parity,
        "versions": package_versions(),
        "created": utc_now(),
    }


def build(model_name: str, *, weights: str | None = None, random_init: bool = False, config=None,
          steps: int | None = None, precision: str = "fp32", batch: BatchProfile = BatchProfile(),
          with_landmarks: bool = False, opset: int | None = None, outdir: str | os.PathLike = "artifacts",
          options: PrecisionOptions = PrecisionOptions()) -> BuildResult:
    """Export, verify and publish one artifact. Raises ExportError; never leaves partial files."""
    from .manifest import publish_file, write_json_atomic
    from .onnx_export import DEFAULT_OPSET, UnrolledSR, check_onnx, onnx_from_model

    _check_precision(precision)
    if options.accuracy_gate not in ACCURACY_GATES:
        raise ExportError(f"--accuracy-gate {options.accuracy_gate!r}: expected one of {', '.join(ACCURACY_GATES)}")
    calibration = _load_calibration(options) if precision == "int8" else None
    opset = DEFAULT_OPSET if opset is None else opset
    weights_path = _resolve_weights(model_name, weights, random_init)
    model = _load_model(model_name, config, weights_path)
    steps = _check_steps(model, steps)
    outdir = Path(outdir)
    _prepare_outdir(outdir)

    name = artifact_name(model_name, steps, precision, with_landmarks)
    onnx_path, manifest_path = outdir / f"{name}.onnx", outdir / f"{name}.json"
    wrapper = UnrolledSR(model, steps, with_landmarks)
    reference = UnrolledSR(model, steps, with_landmarks, fuse=False)  # parity is checked against the model as trained
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".onnx", dir=outdir)
    os.close(fd)
    tmp_path = Path(tmp)
    prec_path = tmp_path.with_name(tmp_path.name + f".{precision}.onnx")
    try:
        log.info("exporting %s (%d steps) to ONNX opset %d", model_name, steps, opset)
        onnx_from_model(wrapper, tmp_path, opset=opset)
        check_onnx(tmp_path)
        parity = verify_parity(reference, tmp_path)
        if not parity["passed"]:
            raise ExportError(f"ONNX Runtime does not match PyTorch: {parity}. Nothing was written.")
        manifest = _manifest(model_name, model, steps, precision, batch, with_landmarks, opset,
                             weights_path, onnx_path.name, parity)
        if precision != "fp32":
            manifest.update(make_precision_onnx(tmp_path, prec_path, precision, options, calibration))
        manifest["trtexec"] = trtexec_hint(onnx_path, precision, batch)
        publish_file(prec_path if precision != "fp32" else tmp_path, onnx_path)
    finally:
        tmp_path.unlink(missing_ok=True)
        prec_path.unlink(missing_ok=True)
    write_json_atomic(manifest_path, manifest)
    return BuildResult(onnx_path, manifest_path, manifest)


def _load_calibration(options: PrecisionOptions):
    """The int8 calibration set: --calibration-data, else the default set from the UTK train split."""
    from calibration import CalibrationError, default_set, load_set

    try:
        if options.calibration_data:
            return load_set(options.calibration_data)
        return default_set()
    except CalibrationError as err:
        raise ExportError(str(err)) from err


def make_precision_onnx(fp32_path: Path, out_path: Path, precision: str, options: PrecisionOptions,
                        calibration=None) -> dict:
    """fp32 ONNX -> fp16/int8 ONNX at `out_path`, checked and gated; returns the manifest keys."""
    from . import precision as prec
    from .onnx_export import check_onnx

    if precision == "fp16":
        keep = prec.FP16_KEEP_FP32_OPS if options.exclude_op_types is None else options.exclude_op_types
        info = prec.convert_fp16(fp32_path, out_path, keep_op_types=keep, keep_nodes=options.exclude_nodes)
    else:
        data, description = calibration
        exclude = prec.INT8_DEFAULT_EXCLUDE_OPS if options.exclude_op_types is None else options.exclude_op_types
        info = prec.quantize_int8(fp32_path, out_path, data["lr"], method=options.calibration,
                                  exclude_op_types=exclude, exclude_nodes=options.exclude_nodes)
        info["calibration_set"] = description
    check_onnx(out_path)
    keys = {"precision_conversion": info}
    if options.accuracy_gate == "off":
        log.warning("accuracy gate is off: the %s model was not compared with fp32", precision)
        keys["accuracy"] = {"skipped": True}
        return keys
    log.info("accuracy gate: %s vs fp32 on %d val images (ONNX Runtime CPU)", precision, options.gate_images)
    gate = prec.accuracy_gate(fp32_path, out_path, precision, count=options.gate_images)
    keys["accuracy"] = gate
    summary = (f"{precision} Y-PSNR vs GT {gate[f'{precision}_vs_gt_db']:.3f} dB, fp32 {gate['fp32_vs_gt_db']:.3f} dB "
               f"(delta {gate['delta_vs_gt_db']:+.3f} dB, allowed -{gate['tolerance_db']} dB); "
               f"{precision} vs fp32 {gate[f'{precision}_vs_fp32_db']:.2f} dB on {gate['images']}")
    if not gate["passed"]:
        if options.accuracy_gate == "fail":
            raise ExportError(f"accuracy gate failed: {summary}. Nothing was written. Keep more nodes in fp32 "
                              "(--exclude-op-types / --exclude-nodes), try --calibration max|entropy, or pass "
                              "--accuracy-gate warn to publish anyway.")
        log.warning("accuracy gate failed (publishing anyway, --accuracy-gate warn): %s", summary)
    else:
        log.info("accuracy gate passed: %s", summary)
    return keys


def trtexec_hint(onnx_path: Path, precision: str, batch: BatchProfile) -> str:
    """The trtexec command that compiles this artifact on the target (TensorRT >= 10, strongly typed)."""
    from .tensorrt_build import trtexec_command

    return trtexec_command(onnx_path.name, batch, precision)


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    from models import list_models

    p = argparse.ArgumentParser(prog="python -m export.build", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=f"one of: {', '.join(list_models())}")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", help="weights file (.safetensors, or official .pth/.pt); default: shipped weights")
    src.add_argument("--random-init", action="store_true", help="export random weights (pipeline tests only)")
    p.add_argument("--config", help="architecture config name (default: the paper's, or the one stored in --weights)")
    p.add_argument("--steps", type=int, help="recurrent steps to unroll (1..num_steps; default: all)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--batch", default="1:8:32", help="dynamic batch profile MIN:OPT:MAX (default 1:8:32)")
    p.add_argument("--with-landmarks", action="store_true", help="also output landmarks [N,K,2] in output pixels")
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
    p.add_argument("--tensorrt", action="store_true", help="also build a TensorRT engine (needs tensorrt)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    # Our loggers at INFO; third-party exporters (onnxscript, onnx_ir) stay at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("export", "models", "calibration"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)
    try:
        result = build(
            args.model, weights=args.weights, random_init=args.random_init, config=args.config,
            steps=args.steps, precision=args.precision, batch=BatchProfile.parse(args.batch),
            with_landmarks=args.with_landmarks, opset=args.opset, outdir=args.outdir,
            options=PrecisionOptions(
                accuracy_gate=args.accuracy_gate, gate_images=args.gate_images, calibration=args.calibration,
                calibration_data=args.calibration_data,
                exclude_op_types=None if args.exclude_op_types is None else _split(args.exclude_op_types),
                exclude_nodes=_split(args.exclude_nodes)),
        )
    except ExportError as err:
        log.error("%s", err)
        return 2
    parity = result.manifest["parity"]
    print(f"onnx:     {result.onnx_path}")
    print(f"manifest: {result.manifest_path}")
    print(f"parity:   max |onnxruntime - torch| = {parity['sr_max_abs_error']:.2e} on {parity['inputs']}")
    gate = result.manifest.get("accuracy")
    if gate and not gate.get("skipped"):
        p = result.manifest["precision"]
        print(f"accuracy: {p} {gate[f'{p}_vs_gt_db']:.3f} dB vs fp32 {gate['fp32_vs_gt_db']:.3f} dB Y-PSNR "
              f"(delta {gate['delta_vs_gt_db']:+.3f}, {p} vs fp32 {gate[f'{p}_vs_fp32_db']:.2f} dB) "
              f"-> {'passed' if gate['passed'] else 'FAILED (warn)'}")
    return _tensorrt_step(result, args.tensorrt)


def _split(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _tensorrt_step(result: BuildResult, wanted: bool) -> int:
    """Build the engine when TensorRT is importable; otherwise print the trtexec command for the target."""
    from .tensorrt_build import tensorrt_available

    if not tensorrt_available():
        print("tensorrt: not found here; compile on the target with:")
        print(f"  {result.manifest['trtexec']}")
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
