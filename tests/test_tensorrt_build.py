"""export.tensorrt_build against a STRICT FAKE of TensorRT's Python API (tests/fake_tensorrt.py).

The fake proves that the builder calls only names that exist in TensorRT 10 (and, for 11, not the removed
weakly typed API) and takes the right path per version; it proves nothing about TensorRT itself. Tests
marked `tensorrt` build real engines through the project's exporter and skip where TensorRT is missing.
"""
import json

import numpy as np
import pytest

from export import ExportError
from export.tensorrt_build import (
    EngineOptions, build_engine, choose_path, parse_l4t, tensorrt_available, trtexec_command,
)
from runtime.contract import BatchProfile, TensorSpec

from conftest import write_sr_model
from fake_tensorrt import make_fake_tensorrt

LR = TensorSpec("lr", "float32", ("N", 3, 16, 16), (0.0, 1.0))
CALIB = {"lr": np.random.default_rng(0).random((40, 3, 16, 16), dtype=np.float32), "sha256": "setsha"}


def _args(trt, name):
    return [c[1] for c in trt.calls if c[0] == name]


@pytest.fixture
def onnx_files(tmp_path):
    write_sr_model(tmp_path / "m_fp16.onnx", mode="linear")
    write_sr_model(tmp_path / "m_fp32.onnx", mode="linear")
    return tmp_path


def test_the_fake_is_strict():
    """A misspelt property or method must fail, as it would on real TensorRT."""
    trt = make_fake_tensorrt("10.3.0")
    config = trt.Builder(trt.Logger(trt.Logger.WARNING)).create_builder_config()
    with pytest.raises(AttributeError, match="builder_optimisation_level"):
        config.builder_optimisation_level = 3
    with pytest.raises(AttributeError):
        config.set_memory_limit(trt.MemoryPoolType.WORKSPACE, 1 << 20)
    assert not hasattr(make_fake_tensorrt("11.1.0").BuilderFlag, "FP16")  # removed in TensorRT 11


def test_trt10_fp16_is_strongly_typed_from_precision_onnx(onnx_files):
    trt = make_fake_tensorrt("10.3.0")
    opts = EngineOptions(timing_cache=str(onnx_files / "t.cache"), opt_level=4, hardware_compat="ampere_plus")
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile(1, 8, 32),
                        opts)
    assert _args(trt, "create_network") == [(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED),)]
    assert _args(trt, "parse") == [(str(onnx_files / "m_fp16.onnx"),)]
    assert not _args(trt, "config.set_flag")  # types come from the ONNX
    assert ("config.builder_optimization_level=", (4,)) in trt.calls
    assert ("config.hardware_compatibility_level=", (trt.HardwareCompatibilityLevel.AMPERE_PLUS,)) in trt.calls
    assert ("config.set_memory_pool_limit", (trt.MemoryPoolType.WORKSPACE, 1024 << 20)) in trt.calls
    assert ("profile.set_shape", ("lr", (1, 3, 16, 16), (8, 3, 16, 16), (32, 3, 16, 16))) in trt.calls
    assert json.loads((onnx_files / "m.engine").read_bytes())["fake_engine"] == "10.3.0"  # the plan, no header
    assert (onnx_files / "t.cache").read_bytes() == b"TIMING"
    assert info.network == "strongly_typed" and info.version == "10.3.0" and info.builder_flags == ()
    # The timing cache is reused by the next build.
    trt2 = make_fake_tensorrt("10.3.0")
    build_engine(trt2, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile(), opts)
    assert _args(trt2, "create_timing_cache") == [(b"TIMING",)]


def test_trt8_falls_back_to_weakly_typed_fp16(onnx_files):
    trt = make_fake_tensorrt("8.6.1")
    with pytest.raises(ExportError, match="--fp32-onnx"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile())
    trt = make_fake_tensorrt("8.6.1")
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile(),
                        EngineOptions(fp32_onnx=str(onnx_files / "m_fp32.onnx")))
    assert _args(trt, "create_network") == [(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH),)]
    assert _args(trt, "parse") == [(str(onnx_files / "m_fp32.onnx"),)]
    assert _args(trt, "config.set_flag") == [("FP16",)] and info.builder_flags == ("FP16",)
    assert info.network == "legacy"


def test_legacy_int8_dla_with_calibrator_and_cache(onnx_files):
    from calibration.cache import format_cache, write_cache

    trt = make_fake_tensorrt("10.3.0")
    with pytest.raises(ExportError, match="DLA needs static shapes"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "int8", LR, BatchProfile(1, 8, 32),
                     EngineOptions(dla_core=0, fp32_onnx=str(onnx_files / "m_fp32.onnx")), CALIB)
    cache = onnx_files / "calib.cache"
    opts = EngineOptions(dla_core=1, fp32_onnx=str(onnx_files / "m_fp32.onnx"), calibration_cache=str(cache))
    served = []
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "int8", LR, BatchProfile(8, 8, 8),
                        opts, CALIB, to_device=lambda a: (served.append(a.shape) or 1234, a))
    assert info.builder_flags == ("FP16", "INT8", "GPU_FALLBACK")
    assert ("config.default_device_type=", (trt.DeviceType.DLA,)) in trt.calls
    assert ("config.DLA_core=", (1,)) in trt.calls and ("config.set_calibration_profile", ()) in trt.calls
    calibrators = [c[1][0] for c in trt.calls if c[0] == "config.int8_calibrator="]
    assert len(calibrators) == 1
    calib = calibrators[0]
    assert isinstance(calib, trt.IInt8EntropyCalibrator2) and calib.get_batch_size() == 8
    pointers = []
    while (p := calib.get_batch(["lr"])) is not None:
        pointers.append(p)
    assert pointers == [[1234]] * 5 and served == [(8, 3, 16, 16)] * 5
    # No cache yet -> calibrate; TensorRT's cache is written with a sidecar; read back for the same model/set.
    assert calib.read_calibration_cache() is None
    text = format_cache({"lr": 1 / 127}, 100300).encode()
    calib.write_calibration_cache(text)
    assert calib.read_calibration_cache() == text
    # Same cache file, another calibration set -> stale -> None (TensorRT recalibrates).
    write_cache(cache, text, "othermodel", "setsha")
    assert calib.read_calibration_cache() is None
    cache.write_text("garbage")
    assert calib.read_calibration_cache() is None


def test_dla_rejects_fp32_and_trt1012_legacy_warns(onnx_files, caplog):
    trt = make_fake_tensorrt("10.12.0")
    with pytest.raises(ExportError, match="DLA runs fp16 or int8 only"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp32", LR, BatchProfile(1, 1, 1),
                     EngineOptions(dla_core=0, fp32_onnx=str(onnx_files / "m_fp32.onnx")))
    assert "deprecated from 10.12" in caplog.text
    assert choose_path((10, 13), EngineOptions()) == "strongly_typed"
    assert choose_path((10, 3), EngineOptions(legacy=True)) == "legacy"
    assert choose_path((8, 6), EngineOptions()) == "legacy"


@pytest.mark.parametrize("version, options, fragment", [
    ("11.1.0", EngineOptions(legacy=True), "no weakly typed \\(legacy\\) builder path"),
    ("11.1.0", EngineOptions(dla_core=0), "no weakly typed"),
    ("10.16.2", EngineOptions(dla_core=0), "--dla-core: TensorRT 10.16 .* has no DLA support"),
])
def test_paths_a_release_does_not_have_are_refused(onnx_files, version, options, fragment):
    trt = make_fake_tensorrt(version)
    with pytest.raises(ExportError, match=fragment):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile(4, 4, 4),
                     options)
    assert not trt.calls  # refused before any TensorRT call


def test_trt11_strongly_typed_build_uses_no_removed_api(onnx_files):
    trt = make_fake_tensorrt("11.1.0")
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "int8", LR, BatchProfile())
    assert info.network == "strongly_typed" and not _args(trt, "config.set_flag")


def test_parser_errors_name_the_node(onnx_files):
    trt = make_fake_tensorrt("10.3.0", parse_errors=[(7, "/conv_in/Conv", "Conv", "unsupported weights type")])
    with pytest.raises(ExportError, match=r"node 7 '/conv_in/Conv' \(Conv\): unsupported weights type"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile())
    assert not (onnx_files / "m.engine").exists()


def test_trtexec_command_uses_the_declared_input():
    cmd = trtexec_command("dic_s8_int8.onnx", LR, BatchProfile(1, 4, 16))
    assert cmd == ("trtexec --onnx=dic_s8_int8.onnx --saveEngine=dic_s8_int8.engine --stronglyTyped "
                   "--minShapes=lr:1x3x16x16 --optShapes=lr:4x3x16x16 --maxShapes=lr:16x3x16x16 "
                   "--memPoolSize=workspace:1024M --timingCacheFile=timing.cache --builderOptimizationLevel=3")
    x4 = TensorSpec("lr", "float32", ("N", 3, 32, 32))
    assert "--maxShapes=lr:8x3x32x32" in trtexec_command("m.onnx", x4, BatchProfile(1, 8, 8))


def test_l4t_release_line():
    assert parse_l4t("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64") == "36.4.3"
    assert parse_l4t("not a tegra file") is None


@pytest.mark.skipif(tensorrt_available(), reason="checks the message shown where TensorRT is missing")
def test_cli_without_tensorrt_prints_trtexec_from_the_current_folder(tmp_path, capsys, monkeypatch):
    import torch

    from export.build import main
    from models import create_model
    from training.checkpoints import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    weights = save_weights(model, tmp_path / "w.safetensors", metadata={"config": model.config.to_dict()})
    monkeypatch.chdir(tmp_path)
    assert main(["--model", "dic", "--weights", str(weights), "--steps", "1", "--outdir", "out", "--tensorrt"]) == 3
    out = capsys.readouterr().out
    assert "tensorrt: not found here" in out and "trtexec --onnx=out/dic_s1_fp32.onnx" in out
    assert "--saveEngine=out/dic_s1_fp32.engine" in out
    manifest = json.loads((tmp_path / "out" / "dic_s1_fp32.json").read_text())
    assert manifest["trtexec"].startswith("trtexec --onnx=dic_s1_fp32.onnx")  # relative to the manifest's folder


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(not tensorrt_available(), reason="tensorrt is not installed")
def test_real_tensorrt_engine_through_the_exporter(tmp_path):
    """Export -> export.tensorrt_build -> the runtime's TensorRT backend, on real TensorRT and a GPU."""
    import torch

    from export.build import build
    from export.precision import PrecisionOptions
    from export.tensorrt_build import build_engine_from_manifest
    from models import create_model
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend
    from training.checkpoints import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    weights = save_weights(model, tmp_path / "w.safetensors", metadata={"config": model.config.to_dict()})
    result = build("dic", weights=str(weights), steps=1, precision="fp16", batch=BatchProfile(1, 2, 4),
                   outdir=tmp_path, options=PrecisionOptions(accuracy_gate="off"))
    engine = build_engine_from_manifest(result.manifest_path, EngineOptions(timing_cache=str(tmp_path / "t.cache")))
    lr = np.random.default_rng(0).random((3, 3, 16, 16), dtype=np.float32)
    artifact = load_artifact(result.manifest_path)
    with create_backend("tensorrt", artifact) as trt_backend, \
            create_backend("onnxruntime", artifact, providers=["CPUExecutionProvider"]) as ort_backend:
        assert trt_backend.engine_file.path == engine
        np.testing.assert_allclose(trt_backend.infer({"lr": lr})["sr"], ort_backend.infer({"lr": lr})["sr"], atol=2e-2)


def test_hardware_compat_level_missing_from_the_release_is_a_clear_error(onnx_files):
    trt = make_fake_tensorrt("10.3.0")  # SAME_COMPUTE_CAPABILITY arrived in 10.9
    with pytest.raises(ExportError, match="SAME_COMPUTE_CAPABILITY needs 10.9"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", LR, BatchProfile(),
                     EngineOptions(hardware_compat="same_compute_capability"))
    info = build_engine(make_fake_tensorrt("10.9.0"), onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16",
                        LR, BatchProfile(), EngineOptions(hardware_compat="same_compute_capability"))
    assert info.options["hardware_compat"] == "same_compute_capability"
