"""`python -m export.triton`: a Triton Inference Server model repository from an exported artifact.

    python -m export.triton --model artifacts/pfsr_fp32.json --repository triton_repo [--platform python]

Writes `DIR/NAME/config.pbtxt` and `DIR/NAME/1/model.{onnx,plan,py}`:
- `onnxruntime`: the ONNX file for Triton's onnxruntime backend (Triton containers; not in the bundled server);
- `tensorrt`: a TensorRT plan, only when an engine of the artifact was built for the server's TensorRT release
  and GPU (`--trt-version`, `--compute-capability`), checked against the engine's own manifest;
- `python`: the ONNX file plus `model.py`, which runs it with ONNX Runtime inside Triton's Python backend, so
  the same repository serves on a CPU-only machine with the server bundled in `nvidia-pytriton`.
Names, dtypes and dims come from the manifest, `max_batch_size` from its batch profile; dynamic batching
(preferred sizes, queue delay) and instance groups are options. Beside the model folder,
`NAME.nvinferserver.txt` is a DeepStream `nvinferserver` config for the model as a secondary (per-face)
inference on that repository (written, not run here: no DeepStream on this machine).
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from runtime.artifact import ModelArtifact, load_artifact
from runtime.contract import TensorSpec
from runtime.errors import ModelArtifactError

from . import ExportError

log = logging.getLogger("export.triton")

PLATFORMS = ("onnxruntime", "tensorrt", "python")
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                 "int32": "TYPE_INT32", "int64": "TYPE_INT64"}
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
DEFAULT_QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class RepositoryOptions:
    """How the model is served. `preferred_batches` empty: the batch profile's opt and max."""

    platform: str = "python"
    name: str | None = None
    instances: int = 1
    dynamic_batching: bool = True
    preferred_batches: tuple[int, ...] = ()
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    intra_op_threads: int = 0  # python platform: ONNX Runtime threads per instance (0: its default)
    allow_spinning: bool = False  # python platform: ONNX Runtime's busy-waiting threads (off: measured faster)
    trt_version: str | None = None  # tensorrt platform: the server's TensorRT release, e.g. 10.3.0
    compute_capability: str | None = None  # tensorrt platform: the server's GPU, e.g. 8.7


# --- writing the repository ------------------------------------------------------------------------------
def write_repository(model: str | Path, repository: str | Path, options: RepositoryOptions) -> Path:
    """Write the model folder and the DeepStream config; returns the model folder."""
    if options.platform not in PLATFORMS:
        raise ExportError(f"--platform {options.platform!r} is unknown; expected one of {', '.join(PLATFORMS)}.")
    try:
        artifact = load_artifact(model)
    except ModelArtifactError as err:
        raise ExportError(str(err)) from err
    name = _checked_name(options.name or _default_name(artifact))
    _check_batching(artifact, options)
    folder = Path(repository) / name
    version = folder / "1"
    if version.is_dir():  # a rewrite replaces the model files (another platform leaves none behind)
        _check_ours(folder)
        shutil.rmtree(version)
    new_folder = not folder.exists()
    version.mkdir(parents=True)
    try:
        _copy_model_files(artifact, version, options)
        (folder / "config.pbtxt").write_text(model_config(artifact, name, options))
    except BaseException:  # leave nothing half-written behind (a folder without its config is not ours)
        shutil.rmtree(folder if new_folder else version, ignore_errors=True)
        raise
    Path(repository, f"{name}.nvinferserver.txt").write_text(nvinferserver_config(artifact, name, repository))
    log.info("wrote %s (%s platform)", folder, options.platform)
    return folder


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
OUR_MARKER = "fsr_edge_model"  # a parameter every config.pbtxt written here carries


def _checked_name(name: str) -> str:
    """A Triton model name is one folder inside the repository: no separators, no '..', no leading dot."""
    if not MODEL_NAME.fullmatch(name) or ".." in name:
        raise ExportError(f"--name {name!r}: a model name is 1-128 letters, digits, '_', '-' or '.', starting with a "
                          "letter or digit (it becomes a folder inside the repository)")
    return name


def _check_ours(folder: Path) -> None:
    """Refuse to replace a model folder this tool did not write (its version folder would be deleted)."""
    config = folder / "config.pbtxt"
    if not (config.is_file() and OUR_MARKER in config.read_text(errors="replace")):
        raise ExportError(f"{folder} already exists and was not written by export.triton (no {config.name} with "
                          f"{OUR_MARKER}); nothing was changed. Choose another --name or remove it yourself.")


def _default_name(artifact: ModelArtifact) -> str:
    return (artifact.manifest_path or artifact.path).name.removesuffix(".engine.json").removesuffix(".json") \
        .removesuffix(".onnx").removesuffix(".engine")


def _check_batching(artifact: ModelArtifact, options: RepositoryOptions) -> None:
    batch = artifact.batch
    if batch.min > 1:
        raise ExportError(f"{artifact.path}: batch profile {batch} starts at {batch.min}; Triton sends any batch from "
                          "1 to max_batch_size. Re-export with --batch 1:OPT:MAX.")
    if options.instances < 1:
        raise ExportError(f"--instances {options.instances}: expected at least 1.")
    bad = [size for size in options.preferred_batches if not 1 <= size <= batch.max]
    if bad:
        raise ExportError(f"--preferred-batch {bad}: outside 1..{batch.max} (the artifact's maximum batch).")


def _copy_model_files(artifact: ModelArtifact, version: Path, options: RepositoryOptions) -> None:
    if options.platform == "tensorrt":
        engine = matching_engine(artifact, options.trt_version, options.compute_capability)
        shutil.copy2(engine, version / MODEL_FILES["tensorrt"])
        return
    if artifact.onnx_path is None:
        raise ExportError(f"{artifact.path} has no ONNX file; the {options.platform} platform serves the ONNX "
                          "graph (pass the ONNX manifest, or use --platform tensorrt for an engine).")
    shutil.copy2(artifact.onnx_path, version / "model.onnx")
    if options.platform == "python":
        shutil.copy2(PYTHON_MODEL_SOURCE, version / MODEL_FILES["python"])


def matching_engine(artifact: ModelArtifact, trt_version: str | None, compute_capability: str | None) -> Path:
    """The artifact's engine built for this TensorRT release (major.minor.patch) and GPU compute capability,
    with the same tensors as the artifact; ExportError lists every engine's reason otherwise."""
    if not trt_version or not compute_capability:
        raise ExportError("--platform tensorrt needs the server's --trt-version (e.g. 10.3.0, the TensorRT of the "
                          "Triton release) and --compute-capability (e.g. 8.7): a plan runs only where it was built.")
    if not artifact.engines:
        raise ExportError(f"{artifact.path} has no TensorRT engine beside it; build one on the serving machine with "
                          "`python -m export.tensorrt_build NAME.json`, or use --platform python/onnxruntime.")
    reasons = []
    for engine in artifact.engines:
        build = engine.manifest.tensorrt
        if _release(build.version) != _release(trt_version):
            reasons.append(f"{engine.path.name}: TensorRT {build.version}, the server has {trt_version}")
        elif build.compute_capability != compute_capability:
            reasons.append(f"{engine.path.name}: compute capability {build.compute_capability}, the server's GPU "
                           f"is {compute_capability}")
        elif (engine.manifest.inputs, engine.manifest.outputs) != (artifact.inputs, artifact.outputs):
            reasons.append(f"{engine.path.name}: its tensors differ from {artifact.path.name}'s")
        else:
            return engine.path
    raise ExportError(f"no engine of {artifact.path} fits the server: {'; '.join(reasons)}. Rebuild on the target "
                      "with `python -m export.tensorrt_build NAME.json`.")


def _release(version: str) -> tuple[str, ...]:
    return tuple(str(version).split(".")[:3])


# --- config.pbtxt -----------------------------------------------------------------------------------------
def model_config(artifact: ModelArtifact, name: str, options: RepositoryOptions) -> str:
    """Triton's model configuration (protobuf text) for the artifact."""
    lines = [f'name: "{name}"', _backend_line(options.platform), f"max_batch_size: {artifact.batch.max}"]
    lines += _tensor_block("input", artifact.inputs) + _tensor_block("output", artifact.outputs)
    if options.dynamic_batching:
        preferred = options.preferred_batches or sorted({artifact.batch.opt, artifact.batch.max})
        lines += ["dynamic_batching {", f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
                  f"  max_queue_delay_microseconds: {options.queue_delay_us}", "}"]
    kind = "KIND_GPU" if options.platform == "tensorrt" else "KIND_CPU"
    lines += ["instance_group [", f"  {{ count: {options.instances} kind: {kind} }}", "]"]
    lines += _parameters(artifact, options)
    return "\n".join(lines) + "\n"


def _backend_line(platform: str) -> str:
    return {"onnxruntime": 'backend: "onnxruntime"', "tensorrt": 'platform: "tensorrt_plan"',
            "python": 'backend: "python"'}[platform]


def _tensor_block(kind: str, specs: tuple[TensorSpec, ...]) -> list[str]:
    """Dims without the batch axis (Triton adds it from max_batch_size)."""
    entries = []
    for spec in specs:
        if any(not isinstance(dim, int) for dim in spec.shape[1:]):
            raise ExportError(f"{kind} {spec.name!r} has shape {list(spec.shape)}; only the batch axis may be "
                              "dynamic for a Triton repository.")
        dims = ", ".join(str(dim) for dim in spec.shape[1:])
        entries.append(f'  {{ name: "{spec.name}" data_type: {TRITON_DTYPES[spec.dtype]} dims: [ {dims} ] }}')
    return [f"{kind} ["] + [",\n".join(entries)] + ["]"]


def _parameters(artifact: ModelArtifact, options: RepositoryOptions) -> list[str]:
    values = {OUR_MARKER: artifact.model_name}
    if artifact.manifest is not None:
        values |= {"fsr_edge_precision": artifact.manifest.precision, "fsr_edge_onnx_sha256": artifact.manifest.onnx_sha256}
    if options.platform == "python":
        values |= {"onnx_file": "model.onnx", "intra_op_threads": str(options.intra_op_threads),
                   "allow_spinning": "1" if options.allow_spinning else "0"}
    return [f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}' for key, value in values.items()]


# --- DeepStream ------------------------------------------------------------------------------------------
def nvinferserver_config(artifact: ModelArtifact, name: str, repository: str | Path) -> str:
    """A DeepStream `nvinferserver` config running the model on every detected face (secondary inference,
    tensor output attached as metadata). Written for DeepStream 7.x; not run on this project's machines."""
    return f"""# DeepStream nvinferserver: {name} as a secondary (per-face) model. NOT RUN HERE (no DeepStream/GPU).
# Faces come from the primary detector (gie id 1); each crop is scaled to {artifact.input_hw[1]}x{artifact.input_hw[0]}
# RGB in [0, 1]; the SR output stays a tensor (output_tensor_meta) for a probe to paste back.
infer_config {{
  unique_id: 2
  gpu_ids: [0]
  max_batch_size: {artifact.batch.max}
  backend {{
    triton {{
      model_name: "{name}"
      version: -1
      model_repo {{ root: "{Path(repository).resolve()}" strict_model_config: true }}
    }}
  }}
  preprocess {{
    network_format: IMAGE_FORMAT_RGB
    tensor_order: TENSOR_ORDER_LINEAR
    maintain_aspect_ratio: 0
    normalize {{ scale_factor: 0.00392156862745098 }}
  }}
  postprocess {{ other {{}} }}
}}
input_control {{
  process_mode: PROCESS_MODE_CLIP_OBJECTS
  operate_on_gie_id: 1
  interval: 0
}}
output_control {{ output_tensor_meta: true }}
"""


# --- CLI ------------------------------------------------------------------------------------------------
def _batch_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 4,8") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.triton", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="artifact: manifest .json (or .onnx / .engine / .engine.json)")
    p.add_argument("--repository", required=True, type=Path, help="model repository folder (created if needed)")
    p.add_argument("--platform", default="python", choices=PLATFORMS,
                   help="python (default; ONNX Runtime in Triton's Python backend, works with the bundled CPU "
                        "server), onnxruntime or tensorrt (Triton containers)")
    p.add_argument("--name", help="model name on the server (default: the artifact's name)")
    p.add_argument("--instances", type=int, default=1, help="model instances (instance_group count)")
    p.add_argument("--no-dynamic-batching", action="store_true", help="each request runs on its own")
    p.add_argument("--preferred-batch", type=_batch_list, default=(), help="e.g. 4,8 (default: OPT,MAX of the profile)")
    p.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_QUEUE_DELAY_US)
    p.add_argument("--intra-op-threads", type=int, default=0, help="python platform: ONNX Runtime threads")
    p.add_argument("--allow-spinning", action="store_true",
                   help="python platform: let idle ONNX Runtime threads spin (off by default: on the 2-core test "
                        "machine spinning beside the server's threads cost up to half the throughput)")
    p.add_argument("--trt-version", help="tensorrt platform: the server's TensorRT release, e.g. 10.3.0")
    p.add_argument("--compute-capability", help="tensorrt platform: the server GPU's compute capability, e.g. 8.7")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    options = RepositoryOptions(args.platform, args.name, args.instances, not args.no_dynamic_batching,
                                args.preferred_batch, args.max_queue_delay_us, args.intra_op_threads,
                                args.allow_spinning, args.trt_version, args.compute_capability)
    try:
        folder = write_repository(args.model, args.repository, options)
    except ExportError as err:
        log.error("%s", err)
        return 2
    print(f"model:    {folder}")
    print(f"serve:    python -m runtime.triton_server --repository {args.repository}")
    print(f"use:      python -m runtime.enhance --model triton://127.0.0.1:8001/{folder.name} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
