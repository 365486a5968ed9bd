"""fsr-edge runtime: camera/stream/video -> detect faces -> batched SR -> show/save.

Lean on purpose: it needs numpy, OpenCV and ONNX Runtime only. torch, TensorRT, CUDA Python and the Triton
client are imported lazily by the backend that needs them, and the training side (`models`, `training`, `export`,
`calibration`) is never imported (except by the optional torch backend, when chosen).

Python API: `from runtime import FaceSR` (runtime/api.py). Entry points: `python -m runtime.enhance` (the CLI), `python -m runtime.assets fetch` (the face detector),
`python -m runtime.measure_framing` (how the framing constant was measured), `python -m runtime.triton_server`
(the bundled Triton Inference Server, docs/scale-out.md). See docs/runtime.md.
"""

__all__ = ["FaceSR"]


def __getattr__(name: str):
    """`from runtime import FaceSR` loads the API on first use (importing runtime.contract stays light)."""
    if name == "FaceSR":
        from .api import FaceSR

        return FaceSR
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
