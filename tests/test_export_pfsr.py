"""PFSR through export (BatchNorm folded, parity, fp16) and the runtime (manifest only, no model code)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import ExportError
from export.build import build
from models import create_model
from runtime.shared_data import utk_dir
from training.checkpoints import save_weights

needs_utk = pytest.mark.skipif(utk_dir() is None, reason="../shared/data/faces-utk not found (accuracy gate)")


@pytest.fixture(scope="module")
def pfsr_weights(tmp_path_factory):
    """Seeded tiny PFSR with non-trivial BatchNorm statistics, as a project safetensors file."""
    torch.manual_seed(0)
    model = create_model("pfsr", config="tiny")
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return save_weights(model, tmp_path_factory.mktemp("w") / "pfsr_tiny.safetensors",
                        metadata={"config": model.config.to_dict()})


@pytest.fixture(scope="module")
def pfsr_fp32(tmp_path_factory, pfsr_weights):
    return build("pfsr", weights=str(pfsr_weights), outdir=tmp_path_factory.mktemp("artifacts"))


def test_export_folds_batchnorm_and_matches_torch(pfsr_fp32, pfsr_weights):
    ops = {node.op_type for node in onnx.load(str(pfsr_fp32.onnx_path)).graph.node}
    assert "BatchNormalization" not in ops
    assert {"Conv", "ConvTranspose"} <= ops
    manifest = pfsr_fp32.manifest
    assert manifest.model == "pfsr" and manifest.batchnorm_folded is True
    assert manifest.steps is None and manifest.max_steps is None  # not recurrent: no steps, none in the name
    assert pfsr_fp32.onnx_path.name == "pfsr_fp32.onnx"
    parity = manifest.checks["parity"]
    assert parity["passed"] and parity["sr_max_abs_error"] <= 1e-4
    tiling = manifest.checks["tiling"]  # PFSR is fully convolutional: tiles of 16 px agree with the whole image
    assert tiling["passed"] and tiling["psnr_db"] >= 40 and manifest.tiling == {"stride": 8, "ramp": 2}
    assert manifest.inputs[0].shape == ("N", 3, 16, 16)
    assert manifest.outputs[0].shape == ("N", 3, 128, 128)
    # Independent check against the unfused PyTorch model on fresh inputs, two batch sizes.
    model = create_model("pfsr", weights=pfsr_weights)
    session = ort.InferenceSession(str(pfsr_fp32.onnx_path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        lr = np.random.default_rng(n).random((n, 3, 16, 16), dtype=np.float32)
        (sr,) = session.run(None, {"lr": lr})
        with torch.no_grad():
            expected = model(torch.from_numpy(lr)).clamp(0, 1).numpy()
        assert sr.shape == (n, 3, 128, 128)
        assert np.abs(sr - expected).max() <= 1e-4


def test_landmarks_are_refused_for_pfsr(pfsr_weights, tmp_path):
    with pytest.raises(ExportError, match="no 'landmarks' output"):
        build("pfsr", weights=str(pfsr_weights), with_landmarks=True, outdir=tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


def test_steps_are_refused_for_pfsr(pfsr_weights, tmp_path):
    with pytest.raises(ExportError, match="--steps 2 was given, but this model is not recurrent"):
        build("pfsr", weights=str(pfsr_weights), steps=2, outdir=tmp_path)


@needs_utk
def test_fp16_export(pfsr_weights, tmp_path):
    result = build("pfsr", weights=str(pfsr_weights), precision="fp16", outdir=tmp_path)
    model = onnx.load(str(result.onnx_path))
    conv_weights = {i.name for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    assert conv_weights, "no fp16 initializers"
    assert result.manifest.precision == "fp16"
    accuracy = result.manifest.checks["accuracy"]
    assert accuracy["passed"] and accuracy["fp16_vs_fp32_db"] > 40


@pytest.mark.shared
def test_runtime_runs_pfsr_from_its_manifest(pfsr_fp32, shared_dir, detector_path):
    """The runtime knows nothing about PFSR: sizes and names come from the manifest."""
    import cv2

    from runtime.artifact import load_artifact
    from runtime.backends import create_backend
    from runtime.detect import FaceDetector
    from runtime.pipeline import EnhanceConfig, Enhancer

    frame = cv2.imread(str(shared_dir / "data" / "scenes" / "group-6faces.jpg"))
    artifact = load_artifact(pfsr_fp32.manifest_path)
    with create_backend("onnxruntime", artifact, providers=["CPUExecutionProvider"]) as backend:
        forced = EnhanceConfig(view="gallery", enhance_all=True)
        result = Enhancer(backend, FaceDetector(detector_path), forced).process(frame, 0)
        routed = Enhancer(backend, FaceDetector(detector_path), EnhanceConfig(view="gallery")).process(frame, 0)
    assert len(result.faces) == 6
    # PFSR passed the export's tiling check, but these faces are enhanced only because they are forced (shown
    # smaller than 8x): one model input each, not 8x their recorded size tile by tile
    assert artifact.tiling is not None
    assert all(face.sr.shape == (128, 128, 3) and face.route == "forced" for face in result.faces)
    # Gallery tiles show the 73-86 px faces smaller than 8x: routing keeps their recorded pixels.
    assert len(routed.faces) == 6 and all(face.sr is None for face in routed.faces)


@pytest.mark.parametrize("backend_name", ["onnxruntime", "torch"])
def test_runtime_backends_agree_on_pfsr(pfsr_fp32, backend_name):
    """Both runtime backends build PFSR from the manifest alone and match the exported graph."""
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend

    lr = np.random.default_rng(3).random((3, 3, 16, 16), dtype=np.float32)
    session = ort.InferenceSession(str(pfsr_fp32.onnx_path), providers=["CPUExecutionProvider"])
    (expected,) = session.run(None, {"lr": lr})
    kwargs = {"providers": ["CPUExecutionProvider"]} if backend_name == "onnxruntime" else {}
    with create_backend(backend_name, load_artifact(pfsr_fp32.manifest_path), **kwargs) as backend:
        out = backend.infer({"lr": lr})
    assert np.abs(out["sr"] - expected).max() <= 1e-4


@pytest.mark.shared
@needs_utk
def test_int8_quantizes_the_transposed_convolutions(pfsr_fp32, tmp_path):
    from export.inputs import face_inputs
    from export.precision import PRECISIONS, accuracy_gate, quantize_int8
    from export.verify import onnx_artifact
    from runtime.artifact import load_artifact

    calib, _ = face_inputs(32, split="train")
    out = tmp_path / "pfsr8.onnx"
    quantize_int8(pfsr_fp32.onnx_path, out, calib, method="max")
    graph = onnx.load(str(out)).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            weight_source = produced_by.get(node.input[1])
            assert weight_source is not None and weight_source.op_type == "DequantizeLinear", node.name
    fp32 = load_artifact(pfsr_fp32.manifest_path)
    gate = accuracy_gate(fp32, onnx_artifact(out, fp32.inputs, fp32.outputs, fp32.batch), PRECISIONS["int8"], count=8)
    assert gate["int8_vs_fp32_db"] > 30


@pytest.mark.parametrize("damage", ["nan", "random_bytes"])
def test_cli_refuses_weights_with_non_finite_values(pfsr_weights, tmp_path, caplog, damage):
    """A NaN in one tensor (or random bytes in its data) must not be published as a passed export."""
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    from export.build import main

    with safe_open(str(pfsr_weights), "np") as f:
        metadata = f.metadata()
    tensors = load_file(str(pfsr_weights))
    name = "step1.0.weight" if "step1.0.weight" in tensors else sorted(tensors)[0]
    values = tensors[name]
    if damage == "nan":
        values.flat[0] = np.nan
    else:  # bytes that decode to huge/NaN floats, as a corrupted download would
        raw = values.reshape(-1).view(np.uint32)
        raw[:] = np.random.default_rng(0).integers(0, 2**32, raw.size, dtype=np.uint32)
        raw[:4] = 0x7FC00000  # make sure at least some are NaN
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata=metadata)
    assert main(["--model", "pfsr", "--weights", str(damaged), "--outdir", str(tmp_path / "out")]) == 2
    assert "non-finite values (NaN/Inf)" in caplog.text
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.shared
@needs_utk
def test_shipped_x4_tiled_beats_bicubic_and_resizing_on_faces_larger_than_its_input(tmp_path):
    """A 40 px face through the x4 model: shrunk to its 32 px input it loses to bicubic; enhanced at its
    recorded size tile by tile (what the manifest allows after the tiling check) it beats bicubic."""
    import json
    from pathlib import Path

    from benchmarks.crossover import measure
    from training.data import load_split

    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "pfsr_x4_tiled_utk.safetensors"
    result = build("pfsr_x4", weights=str(weights), outdir=tmp_path)
    assert result.manifest.tiling == {"stride": 16, "ramp": 4} and result.manifest.min_input_ratio == 0.45
    resized = tmp_path / "resized.json"
    resized.write_text(json.dumps({**json.loads(result.manifest_path.read_text()), "tiling": None}))
    hr = load_split("test").subset(30).hr
    (tiled,) = measure(result.manifest_path, hr, sizes=(40,))["rows"]
    (shrunk,) = measure(resized, hr, sizes=(40,))["rows"]
    assert tiled["gain_db"] > 0.5, tiled
    assert shrunk["gain_db"] < 0 < tiled["model_db"] - shrunk["model_db"] - 1.0, (tiled, shrunk)


@pytest.mark.shared
@needs_utk
def test_shipped_tiled_x8_weights_gain_on_10_px_faces_tiled(tmp_path):
    """pfsr_tiled_utk was trained for faces smaller than its input inside a full window (--framing-routes
    native): run tiled on 10 px faces it beats bicubic clearly (UTK test, 30 faces)."""
    from pathlib import Path

    from benchmarks.crossover import measure
    from training.data import load_split

    weights = Path(__file__).resolve().parents[1] / "models" / "weights" / "pfsr_tiled_utk.safetensors"
    result = build("pfsr", weights=str(weights), outdir=tmp_path)
    assert result.manifest.tiling == {"stride": 8, "ramp": 2} and result.manifest.min_input_ratio == 0.5
    (row,) = measure(result.manifest_path, load_split("test").subset(30).hr, sizes=(10,))["rows"]
    assert row["gain_db"] > 0.5, row
