"""Shared pytest fixtures.

Runtime fixtures (tests/test_runtime*.py): the ../shared data folder and detector, and tiny SR model
artifacts built with onnx.helper (a Resize 16 -> 128 plus Clip 0..1, dynamic batch N, opset 17) with a
manifest made through the one contract (`runtime.contract.OnnxManifest`), so the runtime is tested without
waiting for a real export. Tests of the exporter itself use the real producer (`export.build`).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime import shared_data

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def split_cache(tmp_path_factory) -> Path:
    """Where tests cache decoded face splits: a temporary folder, never the repository."""
    return tmp_path_factory.mktemp("split-cache")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only data folder (../shared or $FSR_SHARED_DIR); tests using it skip when it is absent."""
    root = shared_data.shared_dir()
    if root is None or not (root / "data" / "scenes").is_dir():
        pytest.skip(f"shared data folder not found ({shared_data.MISSING_HINT})")
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


def manifest_for(onnx_path: Path, in_size: int = 16, out_size: int = 128, batch_max: int = 32,
                 input_name: str = "lr", output_name: str = "sr", **fields):
    """An OnnxManifest for a hand-made ONNX file, through the contract (checksum of the real file)."""
    from runtime.contract import BatchProfile, OnnxManifest, TensorSpec, WeightsInfo
    from runtime.files import sha256_of

    values = dict(
        model="tiny-resize", precision="fp32", onnx=onnx_path.name, onnx_sha256=sha256_of(onnx_path), opset=17,
        inputs=(TensorSpec(input_name, "float32", ("N", 3, in_size, in_size), (0.0, 1.0)),),
        outputs=(TensorSpec(output_name, "float32", ("N", 3, out_size, out_size), (0.0, 1.0)),),
        batch=BatchProfile(1, min(8, batch_max), batch_max), weights=WeightsInfo(), scale=out_size // in_size)
    values.update(fields)
    return OnnxManifest(**values)


def make_sr_artifact(folder: Path, name: str = "tiny", mode: str = "cubic", batch_max: int = 32,
                     in_size: int = 16, out_size: int = 128, with_manifest: bool = True, **extra) -> Path:
    """Write name.onnx (+ name.json); returns the manifest path (or the .onnx without a manifest)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = write_sr_model(folder / f"{name}.onnx", mode, in_size, out_size)
    if not with_manifest:
        return onnx_path
    from runtime.contract import write_manifest

    return write_manifest(folder / f"{name}.json", manifest_for(onnx_path, in_size, out_size, batch_max, **extra))


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
    from runtime.contract import write_manifest

    path = tmp_path / "corrupt.onnx"
    path.write_bytes(os.urandom(4096))
    write_manifest(tmp_path / "corrupt.json", manifest_for(path))
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
    from training.checkpoints import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    return save_weights(model, tmp_path_factory.mktemp("w") / "tiny.safetensors",
                        metadata={"config": model.config.to_dict()})


def write_engine_artifact(manifest_path: Path, version: str = "10.3.0.26", gpu: str | None = "Orin",
                          compute_capability: str | None = "8.7", engine_bytes: bytes = b"engine bytes",
                          name: str | None = None) -> Path:
    """A stand-in engine file with a real EngineManifest (through the contract) for the ONNX artifact at
    `manifest_path`; returns the engine path. The bytes are not an engine: only for tests that never
    deserialize it (artifact discovery, backend choice, compatibility checks)."""
    from runtime.contract import EngineManifest, EngineSource, TensorRTBuild, engine_manifest_path, read_manifest
    from runtime.contract import write_manifest
    from runtime.files import sha256_of

    source = read_manifest(manifest_path)
    engine_path = manifest_path.with_name(name or manifest_path.stem + ".engine")
    engine_path.write_bytes(engine_bytes)
    build = TensorRTBuild(version=version, network="strongly_typed", gpu=gpu, compute_capability=compute_capability)
    write_manifest(engine_manifest_path(engine_path), EngineManifest(
        model=source.model, precision=source.precision, engine=engine_path.name, engine_sha256=sha256_of(engine_path),
        source=EngineSource(manifest_path.name, source.onnx, source.onnx_sha256), inputs=source.inputs,
        outputs=source.outputs, batch=source.batch, tensorrt=build))
    return engine_path


# --- training (tests/test_training*.py) ----------------------------------------------------------------
@pytest.fixture(scope="module")
def one_torch_thread():
    """The CPU is shared (2 cores, often a training run beside): oversubscribed OpenMP threads crawl."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fake_data_dir(tmp_path_factory):
    """A miniature faces-utk folder: 10 train (one undecodable), 3 val, 2 test."""
    import json

    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("faces")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    names = [f"img{i:02d}.jpg" for i in range(15)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(root / "images" / name)
    (root / "images" / names[3]).write_bytes(b"not a jpeg")
    lms = rng.uniform(30, 170, (15, 68, 2)).astype(np.float32)
    np.savez(root / "landmarks68.npz", names=np.array(names), landmarks=lms)
    (root / "splits.json").write_text(json.dumps({"train": names[:10], "val": names[10:13], "test": names[13:]}))
    return root


# --- a virtual X screen (tests/test_runtime_window.py, tests/test_runtime_webrtc.py) ----------------------
@pytest.fixture(scope="module")
def virtual_screen():
    """An Xvfb display (":N") for this module (tests that look at a page or window the way a person sees it);
    skipped with the reason when the tools are missing."""
    import shutil
    import subprocess
    import time

    missing = [tool for tool in ("Xvfb", "xdotool", "xwd") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: apt-get install xvfb xdotool x11-apps)")
    free = [n for n in range(70, 100) if not os.path.exists(f"/tmp/.X{n}-lock")]
    if not free:
        pytest.skip("no free X display number in :70-:99")
    display = f":{free[0]}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    socket_path, deadline = f"/tmp/.X11-unix/X{free[0]}", time.monotonic() + 20
    while not os.path.exists(socket_path) and server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # the X server is up once its socket exists
    if server.poll() is not None or not os.path.exists(socket_path):
        server.kill()
        pytest.skip(f"Xvfb could not start on {display}")
    yield display
    server.terminate()
    server.wait(10)
