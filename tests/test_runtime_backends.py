"""Model artifacts and backends: loading, contract checks, bad models, one conformance test for every
backend, and the TensorRT backend's pure logic (the real engine test needs TensorRT and a GPU)."""
import importlib.util
import json

import cv2
import numpy as np
import pytest

from runtime.artifact import load_artifact
from runtime.backends import BACKENDS, Backend, create_backend, resolve_backend_name
from runtime.backends.ensemble import MirrorEnsemble
from runtime.backends.cuda_probe import cuda_device_count
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend, choose_providers
from runtime.backends.tensorrt_backend import TensorRTBackend, _version_key, check_engine_compat, choose_engine
from runtime.contract import TensorRTBuild, WeightsInfo, write_manifest
from runtime.errors import BackendError, ModelArtifactError
from runtime.files import sha256_of
from runtime.pipeline import run_batched

from conftest import manifest_for, write_engine_artifact

CPU = ["CPUExecutionProvider"]
HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAVE_TORCH_SIDE = importlib.util.find_spec("torch") is not None and importlib.util.find_spec("models") is not None


def _faces(n, seed=0):
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


def _bicubic_reference(batch):
    """OpenCV's bicubic resize of each image: what a cubic Resize 16 -> 128 should roughly produce."""
    return np.stack([cv2.resize(im.transpose(1, 2, 0), (128, 128), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1)
                     for im in batch]).clip(0, 1)


# --- artifacts ------------------------------------------------------------------------------------------
def test_manifest_onnx_and_bare_onnx_give_the_same_contract(make_artifact):
    manifest_path = make_artifact("a", batch_max=4)
    from_manifest = load_artifact(manifest_path)
    from_onnx = load_artifact(manifest_path.with_suffix(".onnx"))
    bare = load_artifact(make_artifact("bare", with_manifest=False))
    for artifact in (from_manifest, from_onnx, bare):
        assert artifact.input_hw == (16, 16) and artifact.output_hw == (128, 128)
        assert artifact.image_input.name == "lr" and artifact.image_output.name == "sr"
    assert from_manifest.batch.max == from_onnx.batch.max == 4
    assert from_onnx.manifest.model == "tiny-resize" and from_onnx.model_name == "tiny-resize"
    assert bare.manifest is None and bare.manifest_path is None and bare.batch.max == 32


def test_other_sizes_come_from_the_artifact(make_artifact):
    artifact = load_artifact(make_artifact("x4", in_size=32, out_size=128))
    assert (artifact.input_hw, artifact.output_hw) == ((32, 32), (128, 128))
    with OnnxRuntimeBackend(artifact, providers=CPU) as backend:
        out = backend.infer({"lr": np.zeros((2, 3, 32, 32), np.float32)})["sr"]
    assert out.shape == (2, 3, 128, 128)


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.update(format="something-else/2"), 'manifest format is "something-else/2"'),
    (lambda m: m.pop("inputs"), "'inputs' is null, expected a non-empty list"),
    (lambda m: m.update(batch={"min": 4, "opt": 2, "max": 8}), "1 <= MIN <= OPT <= MAX"),
    (lambda m: m.update(onnx="elsewhere.onnx"), "elsewhere.onnx, which does not exist"),
    (lambda m: m["inputs"][0].update(shape=["N", 16, 16]), r"expected \[N, 3, H, W\]"),
    (lambda m: m["inputs"][0].update(shape=["N", 3, 0, 16]), "positive integers or named dynamic axes"),
    (lambda m: m["inputs"][0].update(dtype="float31"), "expected one of float32"),
    (lambda m: m.update(onnx_sha256="0" * 64), "does not match the checksum"),
    (lambda m: m.update(kind="plan"), "'onnx' or 'engine'"),
])
def test_bad_manifests_are_clear_errors(make_artifact, edit, fragment):
    path = make_artifact("m")
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError, match=fragment):
        load_artifact(path).input_hw


def test_unusable_artifact_paths(tmp_path, make_artifact):
    with pytest.raises(ModelArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nope.json")
    (tmp_path / "w.safetensors").write_bytes(b"x")
    with pytest.raises(ModelArtifactError, match="suffix '.safetensors'"):
        load_artifact(tmp_path / "w.safetensors")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="not readable JSON"):
        load_artifact(tmp_path / "broken.json")
    (tmp_path / "lonely.engine").write_bytes(b"x")
    with pytest.raises(ModelArtifactError, match="no manifest lonely.engine.json"):
        load_artifact(tmp_path / "lonely.engine")


def test_onnx_beside_another_models_manifest_is_refused(make_artifact):
    manifest_path = make_artifact("a")
    renamed = manifest_path.with_name("b.onnx")
    manifest_path.with_suffix(".onnx").rename(renamed)
    manifest_path.rename(renamed.with_suffix(".json"))  # b.json still says "onnx": "a.onnx"
    with pytest.raises(ModelArtifactError, match="does not describe b.onnx"):
        load_artifact(renamed)


def test_corrupt_onnx_is_a_clear_error(corrupt_onnx):
    backend = create_backend("onnxruntime", load_artifact(corrupt_onnx), providers=CPU)
    with pytest.raises(ModelArtifactError, match=f"cannot load {corrupt_onnx}.*re-export"):
        backend.activate()
    corrupt_onnx.with_suffix(".json").unlink()  # without a manifest the graph itself is read: same error
    with pytest.raises(ModelArtifactError, match="cannot load"):
        load_artifact(corrupt_onnx)


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["inputs"][0].update(name="image"), r"inputs \['lr'\] vs \['image'\]"),
    (lambda m: m["inputs"][0].update(shape=["N", 3, 32, 32]), r"'lr': shape \['N', 3, 16, 16\] in the graph"),
    (lambda m: m["outputs"][0].update(dtype="float16"), "'sr': dtype float32 in the graph, float16 in the manifest"),
    (lambda m: m["outputs"].append({"name": "landmarks", "dtype": "float32", "shape": ["N", 68, 2]}),
     r"outputs \['landmarks'\] missing"),
])
def test_manifest_promising_other_tensors_is_refused_at_load(make_artifact, edit, fragment):
    """Names, dtypes and shapes of the manifest are checked against the graph before the first frame."""
    path = make_artifact("m")
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelArtifactError, match=fragment):
        OnnxRuntimeBackend(load_artifact(path), providers=CPU).activate()


# --- the backend interface ---------------------------------------------------------------------------
def _conformance_backends():
    yield pytest.param("onnxruntime", id="onnxruntime")
    yield pytest.param("torch", id="torch", marks=pytest.mark.skipif(
        not HAVE_TORCH_SIDE, reason="torch backend needs torch and the models package"))
    yield pytest.param("tensorrt", id="tensorrt", marks=[pytest.mark.tensorrt, pytest.mark.gpu, pytest.mark.skipif(
        not (HAVE_TENSORRT and cuda_device_count() > 0), reason="needs TensorRT and a CUDA GPU")])


@pytest.fixture
def backend_for(make_artifact, tmp_path):
    """backend_for(name) -> (inactive backend, reference function batch -> expected sr)."""
    def make(name):
        if name == "onnxruntime":
            return (create_backend(name, load_artifact(make_artifact("c", batch_max=4)), providers=CPU),
                    _bicubic_reference, 0.08)
        if name == "torch":
            return _torch_backend(tmp_path)
        return _tensorrt_backend(make_artifact, tmp_path)
    return make


@pytest.mark.parametrize("name", list(_conformance_backends()))
def test_backend_conformance(backend_for, name):
    backend, reference, tolerance = backend_for(name)
    assert backend.name == name and not backend.is_active and backend.last_latency_ms is None
    with pytest.raises(BackendError, match="before activate"):
        backend.infer({"lr": _faces(1)})
    with backend:
        assert backend.is_active
        for n in (1, 3):
            lr = _faces(n, seed=n)
            out = backend.infer({"lr": lr})
            assert set(out) >= {"sr"} and out["sr"].shape == (n, 3, 128, 128) and out["sr"].dtype == np.float32
            assert 0.0 <= out["sr"].min() and out["sr"].max() <= 1.0
            assert np.abs(out["sr"] - reference(lr)).mean() < tolerance
            assert backend.last_latency_ms > 0
        _check_input_validation(backend)
    assert not backend.is_active


def _check_input_validation(backend):
    cases = [
        ({"x": _faces(1)}, r"feeds \['x'\] received, expected exactly \['lr'\]"),
        ({"lr": _faces(1).astype(np.float64)}, "dtype float64, expected float32"),
        ({"lr": _faces(1)[:, :, :8]}, r"axis 2 must be 16"),
        ({"lr": _faces(1)[0]}, r"has shape \[3, 16, 16\]"),
        ({"lr": [[0.0]]}, "is a list"),
        ({"lr": _faces(backend.max_batch + 1)}, f"batch {backend.max_batch + 1}, expected 1..{backend.max_batch}"),
    ]
    for feeds, fragment in cases:
        with pytest.raises(BackendError, match=fragment):
            backend.infer(feeds)


def _torch_backend(tmp_path):
    import torch
    from models import create_model
    from training.checkpoints import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    weights = save_weights(model, tmp_path / "tiny.safetensors", metadata={"config": model.config.to_dict()})
    (tmp_path / "unused.onnx").write_bytes(b"")
    manifest = manifest_for(tmp_path / "unused.onnx", batch_max=4, model="dic", config=model.config.to_dict(), steps=1,
                            weights=WeightsInfo(weights.name, sha256_of(weights)))
    write_manifest(tmp_path / "tiny_dic.json", manifest)

    def reference(lr):
        with torch.no_grad():
            return model.unroll(torch.from_numpy(lr), 1, last_heatmap=False)[0][-1].clamp(0, 1).numpy()
    return create_backend("torch", load_artifact(tmp_path / "tiny_dic.json")), reference, 1e-5


def _tensorrt_backend(make_artifact, tmp_path):
    """Build an engine from the tiny ONNX on this machine through the project's own engine builder."""
    from export.tensorrt_build import EngineOptions, build_engine_from_manifest

    manifest_path = make_artifact("e", mode="linear", batch_max=4)
    engine = build_engine_from_manifest(manifest_path, EngineOptions(timing_cache=None))
    return create_backend("tensorrt", load_artifact(engine)), _bicubic_reference, 0.08


def test_activate_twice_is_an_error(make_artifact):
    backend = create_backend("onnxruntime", load_artifact(make_artifact("m")), providers=CPU)
    with backend:
        with pytest.raises(BackendError, match="activate\\(\\) called twice"):
            backend.activate()


def test_run_batched_chunks_by_max_batch(make_artifact):
    backend = create_backend("onnxruntime", load_artifact(make_artifact("m", batch_max=4)), providers=CPU)
    calls = []
    original = backend._infer
    backend._infer = lambda feeds: calls.append(len(feeds["lr"])) or original(feeds)
    with backend:
        lr = _faces(10)
        out = run_batched(backend, lr)
    assert calls == [4, 4, 2]
    assert out.shape == (10, 3, 128, 128)
    np.testing.assert_allclose(out[9:], backend_out_single(make_artifact, lr[9:]), atol=1e-6)


def backend_out_single(make_artifact, lr):
    with create_backend("onnxruntime", load_artifact(make_artifact("single")), providers=CPU) as backend:
        return backend.infer({"lr": lr})["sr"]


# --- mirror self-ensemble -----------------------------------------------------------------------------------
class _LeftHeavyModel(Backend):
    """Nearest x8 upsampling plus a left-to-right ramp: a model that is not mirror-symmetric."""

    name = "left-heavy"

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _infer(self, feeds):
        up = feeds["lr"].repeat(8, axis=2).repeat(8, axis=3)
        ramp = np.linspace(0, 0.5, up.shape[-1], dtype=np.float32)
        return {"sr": up + ramp, "landmarks": feeds["lr"][:, :1, :2, :2].copy()}


def test_mirror_ensemble_averages_the_plain_and_the_mirrored_pass(make_artifact):
    artifact = load_artifact(make_artifact("m", batch_max=4))
    ensemble = MirrorEnsemble(_LeftHeavyModel(artifact))
    ensemble.batch_limit = 2
    assert ensemble.inner.batch_limit == 2 and ensemble.max_batch == 2
    lr = _faces(3)
    with ensemble:
        assert ensemble.inner.is_active
        out = run_batched(ensemble, lr)
        landmarks = ensemble.infer({"lr": lr[:2]})["landmarks"]
    assert not ensemble.inner.is_active
    # the ramp and its mirror image average to a constant 0.25 over the plain upsampling
    np.testing.assert_allclose(out, lr.repeat(8, axis=2).repeat(8, axis=3) + 0.25, atol=1e-6)
    np.testing.assert_array_equal(landmarks, lr[:2, :1, :2, :2])  # other outputs: the plain pass
    assert ensemble.name == "left-heavy+mirror"


def test_self_ensemble_of_a_symmetric_model_changes_nothing(make_artifact):
    artifact = load_artifact(make_artifact("m"))
    lr = _faces(4)
    with create_backend("onnxruntime", artifact, providers=CPU) as plain:
        expected = plain.infer({"lr": lr})["sr"]
    with create_backend("onnxruntime", artifact, self_ensemble=True, providers=CPU) as mirrored:
        assert isinstance(mirrored, MirrorEnsemble) and mirrored.name == "onnxruntime+mirror"
        np.testing.assert_allclose(mirrored.infer({"lr": lr})["sr"], expected, atol=1e-5)
        with pytest.raises(BackendError, match="batch 40"):
            mirrored.infer({"lr": _faces(40)})  # feeds are still checked against the contract


# --- choosing a backend and providers ---------------------------------------------------------------------
def test_auto_prefers_tensorrt_only_with_an_engine_and_tensorrt(make_artifact, monkeypatch):
    path = make_artifact("m")
    artifact = load_artifact(path)
    assert resolve_backend_name("auto", artifact) == "onnxruntime"
    write_engine_artifact(path)
    with_engine = load_artifact(path)  # the ONNX manifest finds the engine built from it
    assert [e.path.name for e in with_engine.engines] == ["m.engine"]
    monkeypatch.setattr("runtime.backends.tensorrt_installed", lambda: False)
    assert resolve_backend_name("auto", with_engine) == "onnxruntime"
    monkeypatch.setattr("runtime.backends.tensorrt_installed", lambda: True)
    assert resolve_backend_name("auto", with_engine) == "tensorrt"
    assert resolve_backend_name("onnxruntime", with_engine) == "onnxruntime"
    with pytest.raises(BackendError, match="--backend 'openvino' is unknown"):
        resolve_backend_name("openvino", artifact)


def test_engine_of_another_onnx_is_not_picked_up(make_artifact):
    path = make_artifact("m")
    write_engine_artifact(path)
    path.with_suffix(".onnx").write_bytes(path.with_suffix(".onnx").read_bytes())  # same file: still found
    assert len(load_artifact(path).engines) == 1
    other = make_artifact("other", mode="linear")
    engine = write_engine_artifact(other, name="other.engine")
    engine.with_name("other.engine.json").rename(path.with_name("stray.engine.json"))
    assert len(load_artifact(path).engines) == 1  # stray.engine.json names other.json's ONNX, not m.json's


def test_engine_only_artifact_without_tensorrt_says_what_to_do(make_artifact, monkeypatch):
    path = make_artifact("m")
    engine = write_engine_artifact(path)
    path.with_suffix(".onnx").unlink()
    path.unlink()
    artifact = load_artifact(engine)
    assert artifact.onnx_path is None and artifact.engine_path == engine
    monkeypatch.setattr("runtime.backends.tensorrt_installed", lambda: False)
    with pytest.raises(BackendError, match="Install TensorRT, or pass the .onnx"):
        create_backend("auto", artifact)
    with pytest.raises(ModelArtifactError, match="names no ONNX file"):
        create_backend("onnxruntime", artifact)


def test_choose_providers_offers_gpu_providers_only_with_a_gpu():
    installed = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(installed, gpu_count=0) == ["CPUExecutionProvider"]
    assert choose_providers(installed, gpu_count=1) == installed
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider"], 1) == ["CUDAExecutionProvider",
                                                                                      "CPUExecutionProvider"]


@pytest.mark.gpu
@pytest.mark.skipif(cuda_device_count() == 0, reason="needs a CUDA GPU")
def test_onnxruntime_on_gpu_uses_io_binding(make_artifact):
    backend = create_backend("onnxruntime", load_artifact(make_artifact("g")), providers=["CUDAExecutionProvider"])
    with backend:
        assert backend.on_gpu
        lr = _faces(3)
        np.testing.assert_allclose(backend.infer({"lr": lr})["sr"], backend_out_single(make_artifact, lr), atol=1e-4)


# --- TensorRT pure logic ---------------------------------------------------------------------------------------
ORIN = TensorRTBuild(version="10.3.0", network="strongly_typed", gpu="Orin", compute_capability="8.7")


def test_tensorrt_version_key():
    assert _version_key("10.3.0.26") == (10, 3, 0) == _version_key("10.3.0")
    assert _version_key("10.3.0") != _version_key("10.4.0")
    assert _version_key("8.6.1.post1") == (8, 6, 1)


def test_engine_compat_accepts_the_machine_that_built_it(caplog):
    check_engine_compat(ORIN, "10.3.0.30", "Orin", "8.7", "m.engine")
    check_engine_compat(ORIN, "10.3.0", "Orin (nvgpu)", "8.7", "m.engine")  # another name, same SM: a warning
    assert "built on Orin, running on Orin (nvgpu)" in caplog.text


@pytest.mark.parametrize("build, version, cc, fragment", [
    (ORIN, "10.4.0", "8.7", "built with TensorRT 10.3.0, but TensorRT 10.4.0 is installed"),
    (ORIN, "10.3.0", "9.0", r"compute capability 8.7 \(Orin\), but this GPU \(H100\) has 9.0"),
])
def test_engine_compat_mismatches(build, version, cc, fragment):
    with pytest.raises(ModelArtifactError, match=fragment) as info:
        check_engine_compat(build, version, "H100", cc, "m.engine")
    assert "Rebuild" in str(info.value)


def test_choose_engine_takes_the_first_that_fits_and_checks_the_file(make_artifact):
    path = make_artifact("m")
    write_engine_artifact(path, version="10.3.0", gpu="Orin", compute_capability="8.7", name="m.orin.engine")
    write_engine_artifact(path, version="10.16.2", gpu="Thor", compute_capability="11.0", name="m.thor.engine")
    engines = load_artifact(path).engines
    assert choose_engine(engines, "10.16.2.10", "Thor", "11.0").path.name == "m.thor.engine"
    assert choose_engine(engines, "10.3.0.26", "Orin", "8.7").path.name == "m.orin.engine"
    with pytest.raises(ModelArtifactError, match="10.3.0, but TensorRT 10.13.3 .*10.16.2, but TensorRT 10.13.3"):
        choose_engine(engines, "10.13.3", "Thor", "11.0")
    path.with_name("m.orin.engine").write_bytes(b"truncat")  # damaged after the build
    with pytest.raises(ModelArtifactError, match="does not match the sha256 in its manifest"):
        choose_engine(engines, "10.3.0.26", "Orin", "8.7")


def test_tensorrt_backend_needs_an_engine(make_artifact):
    with pytest.raises(ModelArtifactError, match="names no TensorRT engine"):
        TensorRTBackend(load_artifact(make_artifact("m")))


@pytest.mark.skipif(HAVE_TENSORRT, reason="checks the message shown when TensorRT is missing")
def test_tensorrt_backend_without_tensorrt_is_a_clear_error(make_artifact):
    engine = write_engine_artifact(make_artifact("m"))
    backend = create_backend("tensorrt", load_artifact(engine))
    with pytest.raises(BackendError, match="needs (TensorRT|cuda-python)"):
        backend.activate()
    assert not backend.is_active


def test_torch_backend_needs_a_manifest_naming_model_and_weights(make_artifact):
    bare = load_artifact(make_artifact("bare", with_manifest=False))
    with pytest.raises(ModelArtifactError, match="needs the ONNX manifest naming the model"):
        create_backend("torch", bare)
    backend = create_backend("torch", load_artifact(make_artifact("m")))  # manifest without weights
    with pytest.raises((ModelArtifactError, BackendError), match="exported with --random-init|needs PyTorch"):
        backend.activate()


@pytest.mark.skipif(not HAVE_TORCH_SIDE, reason="torch backend needs torch and the models package")
def test_torch_backend_with_corrupt_weights_is_one_clear_error(tmp_path):
    weights = tmp_path / "bad.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    (tmp_path / "unused.onnx").write_bytes(b"")
    write_manifest(tmp_path / "m.json", manifest_for(tmp_path / "unused.onnx", model="dic", config={},
                                                      weights=WeightsInfo(weights.name, sha256_of(weights))))
    with pytest.raises(ModelArtifactError, match="torch backend: cannot load dic weights"):
        create_backend("torch", load_artifact(tmp_path / "m.json")).activate()


@pytest.mark.skipif(not HAVE_TORCH_SIDE, reason="torch backend needs torch and the models package")
def test_torch_backend_refuses_weights_that_are_not_the_exported_ones(tmp_path):
    import torch
    from models import create_model
    from training.checkpoints import save_weights

    model = create_model("dic", config="tiny")
    weights = save_weights(model, tmp_path / "w.safetensors", metadata={"config": model.config.to_dict()})
    recorded = sha256_of(weights)
    (tmp_path / "unused.onnx").write_bytes(b"")
    write_manifest(tmp_path / "m.json", manifest_for(tmp_path / "unused.onnx", model="dic", steps=1,
                                                      config=model.config.to_dict(),
                                                      weights=WeightsInfo(weights.name, recorded)))
    torch.manual_seed(1)
    save_weights(create_model("dic", config="tiny"), weights, metadata={"config": model.config.to_dict()})  # swapped
    with pytest.raises(ModelArtifactError, match="do not match the sha256 in m.json"):
        create_backend("torch", load_artifact(tmp_path / "m.json")).activate()
    write_manifest(tmp_path / "n.json", manifest_for(tmp_path / "unused.onnx", model="dic", steps=1,
                                                      config=model.config.to_dict(), weights=WeightsInfo(weights.name)))
    with pytest.raises(ModelArtifactError, match="records no sha256 of its weights"):
        create_backend("torch", load_artifact(tmp_path / "n.json")).activate()


def test_every_backend_is_registered():
    assert set(BACKENDS) == {"onnxruntime", "tensorrt", "torch", "triton"}
