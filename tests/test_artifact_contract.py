"""The artifact contract end to end, with the real producers: export.build -> export.tensorrt_build (against the
strict TensorRT fake) -> the runtime's loader and backend choice. Plus the schema file and old manifests.

The fake stands in for TensorRT and a GPU (tests/fake_tensorrt.py); nothing here claims a real engine ran.
"""
import json
import logging
import sys

import jsonschema
import pytest

from export import ExportError
from export.build import build
from export.tensorrt_build import EngineOptions, build_engine_from_manifest
from runtime.artifact import load_artifact
from runtime.backends import resolve_backend_name
from runtime.backends.tensorrt_backend import TensorRTBackend, choose_engine
from runtime.contract import SCHEMA_FILE, EngineManifest, OnnxManifest, engine_manifest_path, read_manifest
from runtime.errors import ModelArtifactError

from fake_tensorrt import FakeCudaApi, make_fake_tensorrt

ORIN = ("NVIDIA Orin", "8.7")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real export of the tiny DIC (random weights), batch profile 1:2:4."""
    from runtime.contract import BatchProfile

    outdir = tmp_path_factory.mktemp("artifacts")
    return build("dic", random_init=True, config="tiny", steps=1, precision="fp32", batch=BatchProfile(1, 2, 4),
                 outdir=outdir)


@pytest.fixture
def engine(exported, tmp_path, monkeypatch):
    """The exported artifact copied to tmp_path, with an engine built by export.tensorrt_build on the fake
    TensorRT 10.3 of a Jetson Orin (JetPack 6.2)."""
    for path in (exported.onnx_path, exported.manifest_path):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr("export.tensorrt_build.gpu_info", lambda device=0: ORIN)
    monkeypatch.setattr("export.tensorrt_build.jetson_release", lambda: ("36.4.3", "6.2+b77"))
    trt = make_fake_tensorrt("10.3.0.30")
    manifest_path = tmp_path / exported.manifest_path.name
    before = manifest_path.read_bytes()
    engine_path = build_engine_from_manifest(manifest_path, EngineOptions(timing_cache=None), trt=trt)
    assert manifest_path.read_bytes() == before  # the published ONNX manifest is never rewritten
    return manifest_path, engine_path, trt


def test_engine_manifest_describes_its_source_and_build(engine):
    manifest_path, engine_path, _ = engine
    engine_manifest = read_manifest(engine_manifest_path(engine_path))
    source = read_manifest(manifest_path)
    assert isinstance(engine_manifest, EngineManifest) and isinstance(source, OnnxManifest)
    assert engine_manifest.source.manifest == manifest_path.name and engine_manifest.source.onnx == source.onnx
    assert engine_manifest.source.onnx_sha256 == source.onnx_sha256
    build_info = engine_manifest.tensorrt
    assert (build_info.version, build_info.gpu, build_info.compute_capability) == ("10.3.0.30", *ORIN)
    assert (build_info.l4t, build_info.jetpack, build_info.network) == ("36.4.3", "6.2+b77", "strongly_typed")
    assert build_info.profile == {"lr": {"min": [1, 3, 16, 16], "opt": [2, 3, 16, 16], "max": [4, 3, 16, 16]}}
    assert engine_manifest.inputs == source.inputs and engine_manifest.batch == source.batch


def test_written_manifests_match_the_json_schema(engine):
    manifest_path, engine_path, _ = engine
    schema = json.loads(SCHEMA_FILE.read_text())
    for path in (manifest_path, engine_manifest_path(engine_path)):
        jsonschema.validate(json.loads(path.read_text()), schema)
    broken = json.loads(manifest_path.read_text())
    del broken["onnx_sha256"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    manifest_path.write_text(json.dumps(broken))
    with pytest.raises(ModelArtifactError, match="'onnx_sha256' is null, expected a sha256"):
        read_manifest(manifest_path)


def test_runtime_finds_and_chooses_the_engine_from_either_file(engine, monkeypatch):
    manifest_path, engine_path, _ = engine
    monkeypatch.setattr("runtime.backends.tensorrt_installed", lambda: True)
    for given in (manifest_path, engine_path, engine_manifest_path(engine_path)):
        artifact = load_artifact(given)
        assert artifact.engine_path == engine_path and artifact.onnx_path == manifest_path.with_suffix(".onnx")
        assert resolve_backend_name("auto", artifact) == "tensorrt"
    monkeypatch.setattr("runtime.backends.tensorrt_installed", lambda: False)
    assert resolve_backend_name("auto", load_artifact(manifest_path)) == "onnxruntime"


def test_engine_check_passes_for_the_matching_runtime_and_fails_for_another(engine):
    manifest_path, engine_path, _ = engine
    engines = load_artifact(manifest_path).engines
    assert choose_engine(engines, "10.3.0.26", *ORIN).path == engine_path  # same release, other build number
    with pytest.raises(ModelArtifactError, match="built with TensorRT 10.3.0.30, but TensorRT 10.4.0 is installed.*"
                                                 "Rebuild the engine on this machine"):
        choose_engine(engines, "10.4.0", *ORIN)
    with pytest.raises(ModelArtifactError, match=r"compute capability 8.7 \(NVIDIA Orin\), but this GPU "
                                                 r"\(NVIDIA H100\) has 9.0"):
        choose_engine(engines, "10.3.0.30", "NVIDIA H100", "9.0")


def test_tensorrt_backend_activates_on_the_fake_and_checks_the_graph(engine, monkeypatch):
    """With the fake TensorRT and a host-memory CUDA stand-in, the backend deserializes the engine built
    above, checks its I/O against the manifest and sizes its buffers from the profile."""
    manifest_path, engine_path, _ = engine
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.3.0.30"))
    monkeypatch.setattr("runtime.backends.cuda_api.load_cuda_api", lambda device=0: FakeCudaApi(*ORIN))
    backend = TensorRTBackend(load_artifact(manifest_path))
    with backend:
        assert backend.engine_file.path == engine_path and backend.max_batch == 4
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("10.4.0"))
    with pytest.raises(ModelArtifactError, match="TensorRT 10.4.0 is installed"):
        TensorRTBackend(load_artifact(manifest_path)).activate()


def test_tensorrt_build_refuses_an_engine_manifest_and_a_changed_onnx(engine):
    manifest_path, engine_path, trt = engine
    with pytest.raises(ExportError, match="is an engine manifest"):
        build_engine_from_manifest(engine_manifest_path(engine_path), trt=trt)
    onnx_path = manifest_path.with_suffix(".onnx")
    onnx_path.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(ExportError, match="does not match the checksum"):
        build_engine_from_manifest(manifest_path, trt=trt)
    with pytest.raises(ModelArtifactError, match="does not match the checksum in its manifest"):
        load_artifact(manifest_path)


# --- manifests written by older code ------------------------------------------------------------------
def _v1(manifest: OnnxManifest) -> dict:
    """What export.build wrote before the contract (schema 1)."""
    data = manifest.to_dict()
    data.update(format="fsr-edge-manifest/1", color="RGB", layout="NCHW", **data.pop("checks"))
    for key in ("kind", "onnx_sha256"):
        data.pop(key)
    return data


def test_schema_1_manifest_is_refused_without_the_opt_in(exported, tmp_path, monkeypatch):
    """A schema-1 manifest has no ONNX checksum: a swapped ONNX must not run silently."""
    monkeypatch.delenv("FSR_EDGE_ALLOW_SCHEMA_1", raising=False)
    (tmp_path / exported.onnx_path.name).write_bytes(b"another model")
    path = tmp_path / exported.manifest_path.name
    path.write_text(json.dumps(_v1(exported.manifest)))
    with pytest.raises(ModelArtifactError, match="schema-1 manifest: it has no checksum.*FSR_EDGE_ALLOW_SCHEMA_1=1"):
        load_artifact(path)


def test_schema_1_manifest_loads_with_a_warning_when_allowed(exported, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("FSR_EDGE_ALLOW_SCHEMA_1", "1")
    (tmp_path / exported.onnx_path.name).write_bytes(exported.onnx_path.read_bytes())
    path = tmp_path / exported.manifest_path.name
    path.write_text(json.dumps(_v1(exported.manifest)))
    with caplog.at_level(logging.WARNING):
        artifact = load_artifact(path)
    assert artifact.manifest.checks["parity"]["passed"] and artifact.input_hw == (16, 16)
    assert "schema 1" in caplog.text and "Re-export" in caplog.text


@pytest.mark.parametrize("name", ["../outside/x.onnx", "/etc/passwd", "sub/m.onnx", ".."])
def test_a_manifest_may_only_name_files_in_its_own_folder(exported, tmp_path, name):
    data = exported.manifest.to_dict()
    data["onnx"] = name
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="may only name a file in its own folder"):
        load_artifact(path)


def test_a_deeply_nested_manifest_is_one_clear_error(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelArtifactError, match="nests its JSON too deeply"):
        load_artifact(path)


def test_schema_1_manifest_with_an_engine_says_rebuild(exported, tmp_path, monkeypatch):
    monkeypatch.setenv("FSR_EDGE_ALLOW_SCHEMA_1", "1")
    data = _v1(exported.manifest)
    data.update(engine="m.engine", tensorrt={"engine": "m.engine", "tensorrt_version": "10.3.0"})
    path = tmp_path / "m.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelArtifactError, match="engines now have their own manifest.*python -m export.tensorrt_build"):
        load_artifact(path)
