"""PyTorch -> ONNX for the super-resolution models, unrolled over a fixed number of steps.

Exporter choice: the dynamo exporter (`torch.onnx.export(..., dynamo=True)`). On DIC it gives the
cleaner graph (constants folded into initializers: ~690 nodes for the "small" config against ~950
with the TorchScript exporter, which leaves Constant/Identity nodes behind) and runs as fast in
ONNX Runtime (measured within noise on CPU); it is also the exporter PyTorch maintains. It needs
opset >= 18, which TensorRT 10 (JetPack 6) parses.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from . import ExportError

log = logging.getLogger(__name__)

INPUT_NAME = "lr"
SR_NAME = "sr"
LANDMARKS_NAME = "landmarks"
MIN_OPSET = 18
DEFAULT_OPSET = 18
MAX_DYNAMIC_BATCH = 4096


class UnrolledSR(nn.Module):
    """Export wrapper: `lr` [N,3,16,16] in [0,1] -> `sr` [N,3,128,128] in [0,1] (+ landmarks).

    Runs exactly `steps` recurrent steps of a model exposing `unroll(lr, steps, last_heatmap)`.
    Without landmarks the last step's landmark pass is left out of the graph: it only feeds a
    next step that does not exist. A model with a `fused()` inference form (PFSR: BatchNorm folded
    into the convolutions) is exported in that form.
    """

    def __init__(self, model: nn.Module, steps: int, with_landmarks: bool = False, fuse: bool = True):
        super().__init__()
        if with_landmarks and not model.supports_landmarks:
            raise ExportError(f"{type(model).__name__} has no landmark output; export without --with-landmarks")
        self.model = inference_form(model) if fuse else model.eval()
        self.steps = steps
        self.with_landmarks = with_landmarks

    def forward(self, lr: torch.Tensor):
        from models.dic import heatmap_peaks

        sr_steps, heatmaps = self.model.unroll(lr, self.steps, last_heatmap=self.with_landmarks)
        sr = sr_steps[-1].clamp(0.0, 1.0)
        if self.with_landmarks:
            return sr, heatmap_peaks(heatmaps[-1], stride=sr.shape[-1] / heatmaps[-1].shape[-1])
        return sr


def inference_form(model: nn.Module) -> nn.Module:
    """The module to export/benchmark: `model.fused()` where the model has one, else the model (eval)."""
    model = model.eval()
    return model.fused() if hasattr(model, "fused") else model


def output_names(with_landmarks: bool) -> list[str]:
    return [SR_NAME, LANDMARKS_NAME] if with_landmarks else [SR_NAME]


def onnx_from_model(wrapper: UnrolledSR, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                    input_size: int = 16) -> Path:
    """Export `wrapper` to a single self-contained ONNX file with a dynamic batch axis."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old for the dynamo exporter; use {MIN_OPSET} or newer")
    path = Path(path)
    example = torch.rand(2, 3, input_size, input_size)
    batch = torch.export.Dim("N", min=1, max=MAX_DYNAMIC_BATCH)
    # The exporter logs harmless notes (e.g. torchvision ops it skips); keep the CLI output clean.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, input_names=[INPUT_NAME],
                output_names=output_names(wrapper.with_landmarks), opset_version=opset,
                dynamic_shapes={"lr": {0: batch}}, verbose=False,
            )
        except Exception as err:  # the exporter raises many types; report them as one
            raise ExportError(f"ONNX export failed at opset {opset}: {err}") from err
    program.save(str(path), external_data=False)
    return path


def check_onnx(path: str | os.PathLike) -> None:
    """ONNX checker (full, with shape inference); raises ExportError with the checker's message."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError) as err:
        raise ExportError(f"{path}: ONNX checker failed: {err}") from err
