"""Shared pytest fixtures.

Runtime fixtures (tests/test_runtime*.py): the ../shared data folder and detector, and tiny SR model
artifacts built with onnx.helper (a Resize 16 -> 128 plus Clip 0..1, dynamic batch N, opset 17) with a
manifest in the exporter's format, so the runtime is tested without waiting for a real export.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_root() -> Path:
    env = os.environ.get("FSR_SHARED_DIR")
    return Path(env) if env else REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only data folder (../shared or $FSR_SHARED_DIR); tests using it skip when it is absent."""
    root = _shared_root()
    if not (root / "data" / "scenes").is_dir():
        pytest.skip(f"shared data folder not found at {root}")
    return root


@pytest.fixture(scope="session")
def detector_path(shared_dir) -> Path:
    path = shared_dir / "models" / "face_detection_yunet_2023mar.onnx"
    if not path.is_file():
        pytest.skip(f"YuNet detector not found at {path}")
    return path


def write_sr_model(path: Path, mode: str = "cubic", in_size: int = 16, out_size: int = 128,
                   input_name: str = "lr", output_name: str = "sr") -> Path:
    """An ONNX 'SR model': Resize (mode) in_size -> out_size, then Clip to [0, 1]; batch axis N."""
    from onnx import TensorProto, helper, save

    factor = out_size / in_size
    graph = helper.make_graph(
        [helper.make_node("Resize", [input_name, "", "scales"], ["up"], mode=mode),
         helper.make_node("Clip", ["up", "lo", "hi"], [output_name])],
        "tiny_sr",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, in_size, in_size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", 3, out_size, out_size])],
        initializer=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, factor, factor]),
                     helper.make_tensor("lo", TensorProto.FLOAT, [], [0.0]),
                     helper.make_tensor("hi", TensorProto.FLOAT, [], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    save(model, str(path))
    return path


def manifest_for(onnx_name: str, in_size: int = 16, out_size: int = 128, batch_max: int = 32,
                 input_name: str = "lr", output_name: str = "sr", **extra) -> dict:
    """A manifest in the exporter's format (fsr-edge-manifest/1)."""
    return {
        "format": "fsr-edge-manifest/1", "model": "tiny-resize", "steps": 1, "precision": "fp32",
        "scale": out_size // in_size, "onnx": onnx_name,
        "inputs": [{"name": input_name, "dtype": "float32", "shape": ["N", 3, in_size, in_size], "range": [0, 1]}],
        "outputs": [{"name": output_name, "dtype": "float32", "shape": ["N", 3, out_size, out_size], "range": [0, 1]}],
        "batch": {"min": 1, "opt": min(8, batch_max), "max": batch_max},
        **extra,
    }


def make_sr_artifact(folder: Path, name: str = "tiny", mode: str = "cubic", batch_max: int = 32,
                     in_size: int = 16, out_size: int = 128, with_manifest: bool = True, **extra) -> Path:
    """Write name.onnx (+ name.json); returns the manifest path (or the .onnx without a manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = write_sr_model(folder / f"{name}.onnx", mode, in_size, out_size)
    if not with_manifest:
        return onnx_path
    manifest = manifest_for(onnx_path.name, in_size, out_size, batch_max, **extra)
    manifest_path = folder / f"{name}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return manifest_path


@pytest.fixture(scope="session")
def sr_artifact(tmp_path_factory) -> Path:
    """Manifest of a cubic Resize 'SR model' whose max batch is 4 (so chunking is exercised)."""
    return make_sr_artifact(tmp_path_factory.mktemp("sr_cubic"), "tiny_cubic", "cubic", batch_max=4)


@pytest.fixture(scope="session")
def fast_sr_artifact(tmp_path_factory) -> Path:
    """Same contract with a bilinear Resize: ONNX Runtime's CPU cubic Resize costs ~5 ms a face, linear
    ~0.1 ms, which keeps the full-video test quick."""
    return make_sr_artifact(tmp_path_factory.mktemp("sr_linear"), "tiny_linear", "linear", batch_max=32)


@pytest.fixture
def corrupt_onnx(tmp_path) -> Path:
    """Random bytes named .onnx, with a valid manifest beside it."""
    path = tmp_path / "corrupt.onnx"
    path.write_bytes(os.urandom(4096))
    (tmp_path / "corrupt.json").write_text(json.dumps(manifest_for(path.name)))
    return path


@pytest.fixture
def make_artifact(tmp_path):
    """make_artifact(name="m", mode="cubic", batch_max=32, in_size=16, out_size=128, with_manifest=True,
    **extra_manifest_keys) -> manifest path (or .onnx path), written under this test's tmp_path."""
    def make(name: str = "m", **kwargs) -> Path:
        return make_sr_artifact(tmp_path / "models", name, **kwargs)
    return make


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """Seeded random weights of the tiny DIC config as a project safetensors file (config in its header)."""
    import torch

    from models import create_model
    from models.weights import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny.safetensors",
                        metadata={"config": model.config.to_dict()})
