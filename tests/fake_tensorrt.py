"""A STRICT FAKE of TensorRT's Python API, for round-trip tests on machines without TensorRT.

It is not TensorRT and proves nothing about TensorRT's own behaviour. What it does prove: the project
calls only names that exist in TensorRT's Python API (10.x; for 11.x without the removed weakly typed
precision API). Every class defines exactly the methods of the real one that this project could use, and
setting any attribute not in the real class's property list raises AttributeError, so a misspelt call or
property fails the test. Names, enum members and signatures were checked against the pybind sources of
NVIDIA/TensorRT (python/src/infer/pyCore.cpp, pyInt8.cpp, python/src/parsers/pyOnnx.cpp) at tags v10.3.0
and v11.1 and the 10.x -> 11.x migration guide. Version differences kept here: SAME_COMPUTE_CAPABILITY
exists from 10.9; TensorRT 11 removed BuilderFlag.FP16/INT8/BF16/FP8, EXPLICIT_BATCH,
IBuilderConfig.int8_calibrator, set_calibration_profile, the IInt8 calibrators and
Builder.platform_has_fast_fp16 (STRONGLY_TYPED stays, value 0, ignored).

The "engine" it builds is a JSON description of the parsed ONNX graph's I/O, so that a deserialized fake
engine reports the real graph's tensor names, dtypes and shapes.
"""
from __future__ import annotations

import json
import types
from enum import IntEnum

import numpy as np


class _Strict:
    """Attributes may only be set if the real TensorRT class has them as properties."""

    _properties: frozenset = frozenset()

    def __setattr__(self, name, value):
        if not name.startswith("_") and name not in self._properties:
            raise AttributeError(f"TensorRT's {type(self).__name__} has no settable attribute {name!r}")
        object.__setattr__(self, name, value)


def make_fake_tensorrt(version: str = "10.3.0.26", parse_errors: list | None = None) -> types.ModuleType:
    """A fresh fake `tensorrt` module; `trt.calls` records (name, args) of the builder-side calls."""
    major, minor = (int(v) for v in version.split(".")[:2])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    record = trt.calls.append

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=WARNING):
            self.min_severity = min_severity

    # 10.x: EXPLICIT_BATCH 0 (deprecated, no effect), STRONGLY_TYPED 1; 11: only STRONGLY_TYPED = 0 (ignored).
    NetworkDefinitionCreationFlag = IntEnum("NetworkDefinitionCreationFlag", {"STRONGLY_TYPED": 0} if major >= 11
                                            else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1})
    MemoryPoolType = IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "DLA_LOCAL_DRAM": 2,
                                                "DLA_GLOBAL_DRAM": 3, "TACTIC_DRAM": 4})
    levels = {"NONE": 0, "AMPERE_PLUS": 1}
    if (major, minor) >= (10, 9):  # added in 10.9
        levels["SAME_COMPUTE_CAPABILITY"] = 2
    HardwareCompatibilityLevel = IntEnum("HardwareCompatibilityLevel", levels)
    flags = {"DEBUG": 2, "GPU_FALLBACK": 3, "REFIT": 5, "DISABLE_TIMING_CACHE": 6, "TF32": 7, "SPARSE_WEIGHTS": 8,
             "VERSION_COMPATIBLE": 12, "STRIP_PLAN": 19}
    if major < 11:  # the weakly typed precision flags are gone in TensorRT 11
        flags.update(FP16=0, INT8=1, BF16=17, FP8=16)
    BuilderFlag = IntEnum("BuilderFlag", flags)
    DeviceType = IntEnum("DeviceType", {"GPU": 0, "DLA": 1})
    TensorIOMode = IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
    DataType = IntEnum("DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5,
                                    "INT64": 10})
    numpy_types = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
                   DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8,
                   DataType.INT64: np.int64}

    def nptype(trt_type):
        return numpy_types[trt_type]

    class ParserError:
        def __init__(self, node, name, op, desc):
            self._values = (node, name, op, desc)

        def node(self):
            return self._values[0]

        def node_name(self):
            return self._values[1]

        def node_operator(self):
            return self._values[2]

        def desc(self):
            return self._values[3]

        def code(self):
            return 8

    class INetworkDefinition(_Strict):
        _properties = frozenset({"name"})

        def __init__(self, flags):
            self._flags, self._io = flags, None

    class OnnxParser(_Strict):
        def __init__(self, network, logger):
            self._network, self._errors = network, []

        def parse(self, model, path=None):
            record(("parse", (path,)))
            if parse_errors:
                self._errors = [ParserError(*e) for e in parse_errors]
                return False
            self._network._io = _graph_io(model)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    class ITimingCache:
        def __init__(self, data):
            self._data = bytes(data) or b"TIMING"

        def serialize(self):
            return self._data

    class IOptimizationProfile(_Strict):
        def __init__(self):
            self._shapes = {}

        def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's own argument names
            record(("profile.set_shape", (input, tuple(min), tuple(opt), tuple(max))))
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    config_properties = {"builder_optimization_level", "hardware_compatibility_level", "default_device_type",
                         "DLA_core", "profiling_verbosity", "avg_timing_iterations", "max_aux_streams"}
    if major < 11:
        config_properties |= {"int8_calibrator"}

    class IBuilderConfig(_Strict):
        _properties = frozenset(config_properties)

        def __init__(self):
            self._profiles, self._flags = [], set()

        def __setattr__(self, name, value):
            super().__setattr__(name, value)
            if not name.startswith("_"):
                record((f"config.{name}=", (value,)))

        def set_memory_pool_limit(self, pool, pool_size):
            record(("config.set_memory_pool_limit", (pool, pool_size)))

        def create_timing_cache(self, serialized_timing_cache):
            record(("create_timing_cache", (bytes(serialized_timing_cache),)))
            return ITimingCache(serialized_timing_cache)

        def set_timing_cache(self, cache, ignore_mismatch):
            self._timing = cache

        def get_timing_cache(self):
            return self._timing

        def add_optimization_profile(self, profile):
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def set_flag(self, flag):
            record(("config.set_flag", (BuilderFlag(flag).name,)))
            self._flags.add(flag)

        def clear_flag(self, flag):
            self._flags.discard(flag)

        def get_flag(self, flag):
            return flag in self._flags

        if major < 11:
            def set_calibration_profile(self, profile):
                record(("config.set_calibration_profile", ()))

    class Builder(_Strict):
        _properties = frozenset({"max_threads"})

        def __init__(self, logger):
            self._logger = logger

        def create_network(self, flags=0):
            record(("create_network", (flags,)))
            return INetworkDefinition(flags)

        def create_builder_config(self):
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            record(("build_serialized_network", ()))
            profiles = {name: [list(shape) for shape in shapes] for name, shapes in config._profiles[0]._shapes.items()}
            return json.dumps({"fake_engine": version, "io": network._io, "profile": profiles}).encode()

        @property
        def num_DLA_cores(self):
            return 2

        if major < 11:  # removed in 11 (deprecated since 10.5)
            @property
            def platform_has_fast_fp16(self):
                return True

    class IExecutionContext(_Strict):
        def __init__(self, engine):
            self._engine, self._shapes, self._addresses = engine, {}, {}

        def set_input_shape(self, name, shape):
            self._shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            io = self._engine._io[name]
            if io["mode"] == "INPUT":
                return self._shapes[name]
            batch = next(iter(self._shapes.values()))[0]
            return tuple(batch if isinstance(d, str) else d for d in io["shape"])

        def set_tensor_address(self, name, memory):
            self._addresses[name] = memory
            return True

        def execute_async_v3(self, stream_handle):
            return True

    class ICudaEngine:
        def __init__(self, description):
            self._io = {t["name"]: t for t in description["io"]}
            self._names = [t["name"] for t in description["io"]]
            self._profile = description["profile"]

        @property
        def num_io_tensors(self):
            return len(self._names)

        def get_tensor_name(self, index):
            return self._names[index]

        def get_tensor_mode(self, name):
            return TensorIOMode[self._io[name]["mode"]]

        def get_tensor_shape(self, name):
            return tuple(-1 if isinstance(d, str) else d for d in self._io[name]["shape"])

        def get_tensor_dtype(self, name):
            return DataType[self._io[name]["dtype"]]

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(shape) for shape in self._profile[name]]  # min, opt, max as set at build time

        def create_execution_context(self):
            return IExecutionContext(self)

    class Runtime(_Strict):
        def __init__(self, logger):
            self._logger = logger

        def deserialize_cuda_engine(self, serialized_engine):
            try:
                description = json.loads(bytes(serialized_engine))
            except ValueError:
                return None  # TensorRT logs an error and returns None for bytes that are not an engine
            if description.get("fake_engine") != version:
                return None
            return ICudaEngine(description)

    names = dict(Logger=Logger, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag,
                 MemoryPoolType=MemoryPoolType, HardwareCompatibilityLevel=HardwareCompatibilityLevel,
                 BuilderFlag=BuilderFlag, DeviceType=DeviceType, TensorIOMode=TensorIOMode, DataType=DataType,
                 nptype=nptype, OnnxParser=OnnxParser, Builder=Builder, Runtime=Runtime)
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        names["IInt8EntropyCalibrator2"] = IInt8EntropyCalibrator2
    for key, value in names.items():
        setattr(trt, key, value)
    return trt


def _graph_io(model_bytes: bytes) -> list[dict]:
    """Inputs and outputs of an ONNX graph as the fake engine reports them (dynamic dims stay names)."""
    import onnx

    model = onnx.load_from_string(bytes(model_bytes))
    dtypes = {onnx.TensorProto.FLOAT: "FLOAT", onnx.TensorProto.FLOAT16: "HALF"}
    io = []
    for mode, values in (("INPUT", model.graph.input), ("OUTPUT", model.graph.output)):
        for value in values:
            tensor = value.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "N") for d in tensor.shape.dim]
            io.append({"name": value.name, "mode": mode, "dtype": dtypes[tensor.elem_type], "shape": shape})
    return io


class FakeCudaApi:
    """Host memory standing in for the runtime's CUDA API (runtime.backends.cuda_api); no GPU work."""

    def __init__(self, name: str = "Orin", capability: str = "8.7"):
        self._name, self._capability = name, capability

    def device_name(self):
        return self._name

    def compute_capability(self):
        return self._capability

    def pinned_empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    def device_alloc(self, nbytes):
        return 4096

    def new_stream(self):
        return object()

    def stream_handle(self, stream):
        return 0

    def copy_htod_async(self, dst, host, stream):
        pass

    def copy_dtoh_async(self, host, src, stream):
        pass

    def synchronize(self, stream):
        pass

    def free(self, stream=None):
        pass
