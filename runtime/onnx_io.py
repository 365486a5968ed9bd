"""Opening ONNX Runtime sessions and reading a graph's I/O; shared by the artifact loader and the backend."""
from __future__ import annotations

from pathlib import Path

from .contract import TensorSpec
from .errors import BackendError, ModelArtifactError

ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64"}


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendError("the onnxruntime backend needs ONNX Runtime: pip install onnxruntime-gpu "
                           "(it includes the CPU provider).") from err
    return onnxruntime


def open_session(path: Path, providers: list[str], intra_op_threads: int | None = None,
                 config: dict[str, str] | None = None):
    """An InferenceSession; `config`: extra session config entries (e.g. `runtime.cpu_int8.qdq_session_config`)."""
    ort = import_onnxruntime()
    if not Path(path).is_file():
        raise ModelArtifactError(f"ONNX model {path} does not exist; keep it beside its manifest or re-export it.")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; provider fallbacks are logged by us
    # Idle worker threads would otherwise spin after each run and steal the CPU from detection/compose.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as err:  # ONNX Runtime raises its own exception types for bad files
        raise ModelArtifactError(f"ONNX Runtime cannot load {path}: {str(err).strip()[:800]}. Expected a valid "
                                 "ONNX model written by `python -m export.build`; re-export it.") from err


def spec_from_node(node) -> TensorSpec:
    """An ONNX Runtime NodeArg as a TensorSpec (unnamed dynamic dims become "N")."""
    shape = tuple(d if isinstance(d, int) else (d or "N") for d in node.shape)
    return TensorSpec(name=node.name, dtype=ORT_DTYPES.get(node.type, node.type), shape=shape)


def session_io(session) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    return (tuple(spec_from_node(n) for n in session.get_inputs()),
            tuple(spec_from_node(n) for n in session.get_outputs()))
