"""The few CUDA calls the TensorRT backend needs, behind one small interface.

Two implementations: cuda-python's runtime API (`cuda.bindings.runtime`, or `cuda.cudart` in releases
before 12.6) and, when only it is installed, pycuda. Both are imported only by `load_cuda_api()`, which
only the TensorRT backend calls. Every cuda-python status goes through `_check()`.
"""
from __future__ import annotations

import ctypes
import logging

import numpy as np

from ..errors import BackendError

log = logging.getLogger(__name__)


def load_cuda_api(device: int = 0) -> "CudartApi | PycudaApi":
    """cuda-python if installed, else pycuda; BackendError naming both if neither is."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        return CudartApi(cudart, device)
    except ImportError:
        pass
    try:
        import pycuda.driver as pycuda_driver
    except ImportError as err:
        raise BackendError("the tensorrt backend needs cuda-python (pip install cuda-python) or pycuda; neither "
                           "is installed. Install one, or use --backend onnxruntime.") from err
    return PycudaApi(pycuda_driver, device)


class CudartApi:
    """cuda-python runtime API. Pointers are ints; streams are cudaStream_t objects."""

    def __init__(self, cudart, device: int):
        self.cudart = cudart
        self._check(cudart.cudaSetDevice(device), "cudaSetDevice")
        self.device = device
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []

    def _check(self, result, what: str):
        """Raise BackendError unless a cuda-python call succeeded; return its other values."""
        err, *values = result
        if err != self.cudart.cudaError_t.cudaSuccess:
            raise BackendError(f"CUDA {what} failed: {getattr(err, 'name', err)}")
        return values[0] if len(values) == 1 else tuple(values)

    def device_name(self) -> str:
        props = self._check(self.cudart.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        name = props.name
        return (name.decode() if isinstance(name, bytes) else str(name)).rstrip("\x00")

    def compute_capability(self) -> str:
        props = self._check(self.cudart.cudaGetDeviceProperties(self.device), "cudaGetDeviceProperties")
        return f"{props.major}.{props.minor}"

    def pinned_empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = self._check(self.cudart.cudaMallocHost(nbytes), "cudaMallocHost")
        self._host_ptrs.append(ptr)
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
        return raw.view(dtype).reshape(shape)

    def device_alloc(self, nbytes: int) -> int:
        ptr = self._check(self.cudart.cudaMalloc(nbytes), "cudaMalloc")
        self._device_ptrs.append(ptr)
        return int(ptr)

    def new_stream(self):
        return self._check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream) -> int:
        return int(stream)

    def copy_htod_async(self, dst: int, host: np.ndarray, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        result = self.cudart.cudaMemcpyAsync(dst, host.ctypes.data, host.nbytes, kind, stream)
        self._check(result, "cudaMemcpyAsync host->device")

    def copy_dtoh_async(self, host: np.ndarray, src: int, stream) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        result = self.cudart.cudaMemcpyAsync(host.ctypes.data, src, host.nbytes, kind, stream)
        self._check(result, "cudaMemcpyAsync device->host")

    def synchronize(self, stream) -> None:
        self._check(self.cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def free(self, stream=None) -> None:
        """Release everything allocated through this object (and the stream, if given)."""
        if stream is not None:
            self._check(self.cudart.cudaStreamDestroy(stream), "cudaStreamDestroy")
        while self._device_ptrs:
            self._check(self.cudart.cudaFree(self._device_ptrs.pop()), "cudaFree")
        while self._host_ptrs:
            self._check(self.cudart.cudaFreeHost(self._host_ptrs.pop()), "cudaFreeHost")


class PycudaApi:
    """pycuda fallback, on the device's primary context (the one TensorRT's runtime API uses)."""

    def __init__(self, driver, device: int):
        self.driver = driver
        driver.init()
        self._device = driver.Device(device)
        self._context = self._device.retain_primary_context()
        self._context.push()
        self._allocations: list = []

    def device_name(self) -> str:
        return self._device.name()

    def compute_capability(self) -> str:
        major, minor = self._device.compute_capability()
        return f"{major}.{minor}"

    def pinned_empty(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        return self.driver.pagelocked_empty(shape, dtype)

    def device_alloc(self, nbytes: int) -> int:
        allocation = self.driver.mem_alloc(nbytes)
        self._allocations.append(allocation)
        return int(allocation)

    def new_stream(self):
        return self.driver.Stream()

    def stream_handle(self, stream) -> int:
        return stream.handle

    def copy_htod_async(self, dst: int, host: np.ndarray, stream) -> None:
        self.driver.memcpy_htod_async(dst, host, stream)

    def copy_dtoh_async(self, host: np.ndarray, src: int, stream) -> None:
        self.driver.memcpy_dtoh_async(host, src, stream)

    def synchronize(self, stream) -> None:
        stream.synchronize()

    def free(self, stream=None) -> None:
        while self._allocations:
            self._allocations.pop().free()
        self._context.pop()
