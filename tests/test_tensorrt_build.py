"""export.tensorrt_build: version/precision branching against a recording FAKE of the TensorRT API.

The fake only records which API calls the builder makes; it proves nothing about TensorRT itself.
Tests marked `tensorrt` build real engines and are skipped where `tensorrt` is not installed.
"""
import json
import types

import numpy as np
import pytest

from export import ExportError
from export.build import BatchProfile
from export.tensorrt_build import EngineOptions, build_engine, choose_path, tensorrt_available, trtexec_command


class _Recorder:
    """An object that accepts any attribute access/call and logs it under a dotted name."""

    def __init__(self, log, name):
        self._log, self._name = log, name

    def __getattr__(self, attr):
        return _Recorder(self._log, f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        self._log.append((self._name, args))
        return _Recorder(self._log, self._name + "()")

    def __setattr__(self, attr, value):
        if attr.startswith("_"):
            object.__setattr__(self, attr, value)
        else:
            self._log.append((f"{self._name}.{attr}=", (value,)))


def fake_tensorrt(version, parse_ok=True):
    """A FAKE tensorrt module (records calls); not TensorRT."""
    log = []
    trt = types.SimpleNamespace(__version__=version, calls=log)

    class Parser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            log.append(("OnnxParser", ()))

        def parse(self, data, path):
            log.append(("parse", (path,)))
            return parse_ok

        def get_error(self, i):
            return types.SimpleNamespace(node=lambda: 7, node_name=lambda: "/conv_in/Conv",
                                         node_operator=lambda: "Conv", desc=lambda: "unsupported weights type")

    class TimingCache:
        def serialize(self):
            return b"TIMING"

    class Config(_Recorder):
        def create_timing_cache(self, data):
            log.append(("create_timing_cache", (data,)))
            return TimingCache()

        def get_timing_cache(self):
            return TimingCache()

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log.append(("create_network", (flags,)))
            return object()

        def create_builder_config(self):
            return Config(log, "config")

        def create_optimization_profile(self):
            return _Recorder(log, "profile")

        def build_serialized_network(self, network, config):
            log.append(("build_serialized_network", ()))
            return b"PLAN"

    class Calibrator:
        def __init__(self):
            pass

    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.Builder, trt.OnnxParser, trt.IInt8EntropyCalibrator2 = Builder, Parser, Calibrator
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0, STRONGLY_TYPED=5)
    trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", GPU_FALLBACK="GPU_FALLBACK")
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.HardwareCompatibilityLevel = types.SimpleNamespace(AMPERE_PLUS="AMPERE_PLUS")
    trt.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
    return trt


def _names(trt):
    return [c[0] for c in trt.calls]


def _args(trt, name):
    return [c[1] for c in trt.calls if c[0] == name]


@pytest.fixture
def onnx_files(tmp_path):
    (tmp_path / "m_fp16.onnx").write_bytes(b"fp16-onnx")
    (tmp_path / "m_fp32.onnx").write_bytes(b"fp32-onnx")
    return tmp_path


CALIB = {"lr": np.random.default_rng(0).random((40, 3, 16, 16), dtype=np.float32), "sha256": "setsha"}


def test_trt10_fp16_is_strongly_typed_from_precision_onnx(onnx_files):
    trt = fake_tensorrt("10.3.0")
    opts = EngineOptions(timing_cache=str(onnx_files / "t.cache"), opt_level=4, hardware_compat="ampere_plus")
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", BatchProfile(1, 8, 32), opts)
    assert _args(trt, "create_network") == [(1 << 5,)]
    assert _args(trt, "parse") == [(str(onnx_files / "m_fp16.onnx"),)]
    assert ("config.set_flag", ("FP16",)) not in trt.calls  # types come from the ONNX
    assert ("config.builder_optimization_level=", (4,)) in trt.calls
    assert ("config.hardware_compatibility_level=", ("AMPERE_PLUS",)) in trt.calls
    assert ("config.set_memory_pool_limit", ("WORKSPACE", 1024 << 20)) in trt.calls
    assert ("profile.set_shape", ("lr", (1, 3, 16, 16), (8, 3, 16, 16), (32, 3, 16, 16))) in trt.calls
    assert (onnx_files / "m.engine").read_bytes() == b"PLAN"  # plain plan, no header
    assert (onnx_files / "t.cache").read_bytes() == b"TIMING"
    assert info["network"] == "strongly_typed" and info["tensorrt_version"] == "10.3.0"
    # The timing cache is reused by the next build.
    trt2 = fake_tensorrt("10.3.0")
    build_engine(trt2, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", BatchProfile(), opts)
    assert _args(trt2, "create_timing_cache") == [(b"TIMING",)]


def test_trt8_falls_back_to_weakly_typed_fp16(onnx_files):
    trt = fake_tensorrt("8.6.1")
    with pytest.raises(ExportError, match="--fp32-onnx"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", BatchProfile())
    trt = fake_tensorrt("8.6.1")
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", BatchProfile(),
                        EngineOptions(fp32_onnx=str(onnx_files / "m_fp32.onnx")))
    assert _args(trt, "create_network") == [(1 << 0,)]  # EXPLICIT_BATCH, not strongly typed
    assert _args(trt, "parse") == [(str(onnx_files / "m_fp32.onnx"),)]
    assert ("config.set_flag", ("FP16",)) in trt.calls and info["builder_flags"] == ["FP16"]
    assert info["network"] == "legacy"


def test_legacy_int8_dla_with_calibrator_and_cache(onnx_files):
    from calibration.cache import format_cache, write_cache

    trt = fake_tensorrt("10.3.0")
    with pytest.raises(ExportError, match="DLA needs static shapes"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "int8", BatchProfile(1, 8, 32),
                     EngineOptions(dla_core=0, fp32_onnx=str(onnx_files / "m_fp32.onnx")), CALIB)
    cache = onnx_files / "calib.cache"
    opts = EngineOptions(dla_core=1, fp32_onnx=str(onnx_files / "m_fp32.onnx"), calibration_cache=str(cache))
    served = []
    info = build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "int8", BatchProfile(8, 8, 8),
                        opts, CALIB, to_device=lambda a: (served.append(a.shape) or 1234, a))
    assert info["builder_flags"] == ["FP16", "INT8", "GPU_FALLBACK"]
    assert ("config.default_device_type=", ("DLA",)) in trt.calls and ("config.DLA_core=", (1,)) in trt.calls
    calibrators = [c[1][0] for c in trt.calls if c[0] == "config.int8_calibrator="]
    assert len(calibrators) == 1
    calib = calibrators[0]
    assert calib.get_batch_size() == 8
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
    trt = fake_tensorrt("10.13.0")
    with pytest.raises(ExportError, match="DLA runs fp16 or int8 only"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp32", BatchProfile(1, 1, 1),
                     EngineOptions(dla_core=0, fp32_onnx=str(onnx_files / "m_fp32.onnx")))
    assert "deprecated from 10.12" in caplog.text
    assert choose_path((10, 13), EngineOptions()) == "strongly_typed"
    assert choose_path((10, 3), EngineOptions(legacy=True)) == "legacy"
    assert choose_path((8, 6), EngineOptions()) == "legacy"


def test_parser_errors_name_the_node(onnx_files):
    trt = fake_tensorrt("10.3.0", parse_ok=False)
    with pytest.raises(ExportError, match=r"node 7 '/conv_in/Conv' \(Conv\): unsupported weights type"):
        build_engine(trt, onnx_files / "m_fp16.onnx", onnx_files / "m.engine", "fp16", BatchProfile())
    assert not (onnx_files / "m.engine").exists()


def test_trtexec_command():
    cmd = trtexec_command("dic_s8_int8.onnx", BatchProfile(1, 4, 16), "int8")
    assert cmd == ("trtexec --onnx=dic_s8_int8.onnx --saveEngine=dic_s8_int8.engine --stronglyTyped "
                   "--minShapes=lr:1x3x16x16 --optShapes=lr:4x3x16x16 --maxShapes=lr:16x3x16x16 "
                   "--memPoolSize=workspace:1024M --timingCacheFile=timing.cache --builderOptimizationLevel=3")


@pytest.mark.skipif(tensorrt_available(), reason="checks the message shown where TensorRT is missing")
def test_cli_without_tensorrt_prints_trtexec(tmp_path, capsys):
    import torch

    from export.build import main
    from models import create_model
    from models.weights import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    weights = save_weights(model, tmp_path / "w.safetensors", metadata={"config": model.config.to_dict()})
    assert main(["--model", "dic", "--weights", str(weights), "--steps", "1", "--outdir", str(tmp_path),
                 "--tensorrt"]) == 3
    out = capsys.readouterr().out
    assert "tensorrt: not found here" in out and "trtexec --onnx=dic_s1_fp32.onnx" in out
    manifest = json.loads((tmp_path / "dic_s1_fp32.json").read_text())
    assert manifest["trtexec"] in out


@pytest.mark.tensorrt
@pytest.mark.skipif(not tensorrt_available(), reason="tensorrt is not installed")
def test_real_tensorrt_strongly_typed_fp16(tmp_path):
    import tensorrt as trt
    import torch

    from export.build import PrecisionOptions, build
    from models import create_model
    from models.weights import save_weights

    torch.manual_seed(0)
    model = create_model("dic", config="tiny")
    weights = save_weights(model, tmp_path / "w.safetensors", metadata={"config": model.config.to_dict()})
    result = build("dic", weights=str(weights), steps=1, precision="fp16", outdir=tmp_path,
                   options=PrecisionOptions(accuracy_gate="off"))
    info = build_engine(trt, result.onnx_path, tmp_path / "m.engine", "fp16", BatchProfile(1, 2, 4),
                        EngineOptions(timing_cache=str(tmp_path / "t.cache")))
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    assert runtime.deserialize_cuda_engine((tmp_path / "m.engine").read_bytes()) is not None
    assert info["network"] == "strongly_typed"
