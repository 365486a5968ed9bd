"""Is there a CUDA GPU? Asked through the driver library with ctypes, so no CUDA Python package is needed.

ONNX Runtime's GPU package lists its CUDA and TensorRT providers even on machines without a GPU; offering
them there only produces load errors before it falls back to the CPU.
"""
from __future__ import annotations

import ctypes
import functools
import logging

log = logging.getLogger(__name__)

_DRIVER_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")


@functools.lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports; 0 without a driver or a device."""
    for name in _DRIVER_LIBRARIES:
        try:
            driver = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    log.debug("no CUDA driver library found")
    return 0
