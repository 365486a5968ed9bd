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

from runtime.contract import TensorSpec

from . import ExportError

log = logging.getLogger(__name__)

MIN_OPSET = 18
DEFAULT_OPSET = 18
MAX_DYNAMIC_BATCH = 4096


class UnrolledSR(nn.Module):
    """Export wrapper: the image input -> the clamped SR image (+ the requested extra outputs).

    Runs exactly `steps` recurrent steps of a model exposing `unroll(lr, steps, last_heatmap)` (steps None:
    a model that is not recurrent). Without the landmark output the last step's landmark pass is left out
    of the graph: it only feeds a next step that does not exist. With `fuse`, a model's inference form
    (`fused()`: PFSR with BatchNorm folded into the convolutions) is exported.
    """

    def __init__(self, model: nn.Module, steps: int | None, extras: tuple[str, ...] = (), fuse: bool = True):
        super().__init__()
        if len(extras) > 1 or set(extras) - {"landmarks", "boundaries"}:
            raise ExportError(f"extra outputs {list(extras)}: one of landmarks (DIC) or boundaries (MSFSR) at most")
        self.model = inference_form(model) if fuse else model.eval()
        self.steps = steps
        self.extra = extras[0] if extras else None

    def forward(self, lr: torch.Tensor):
        # The model's last heatmaps: DIC's landmark heatmaps (turned into points), MSFSR's boundary maps (as they are)
        sr_steps, heatmaps = self.model.unroll(lr, self.steps, last_heatmap=self.extra is not None)
        sr = sr_steps[-1].clamp(0.0, 1.0)
        if self.extra == "landmarks":
            return sr, self.model.landmarks(heatmaps[-1], output_size=sr.shape[-1])
        if self.extra == "boundaries":
            return sr, heatmaps[-1]
        return sr


def inference_form(model: nn.Module) -> nn.Module:
    """The module to export/benchmark: `model.fused()` where the model has one, else the model (eval)."""
    model = model.eval()
    return model.fused() if hasattr(model, "fused") else model


def onnx_from_model(wrapper: UnrolledSR, path: str | os.PathLike, inputs: tuple[TensorSpec, ...],
                    outputs: tuple[TensorSpec, ...], opset: int = DEFAULT_OPSET) -> Path:
    """Export `wrapper` to one self-contained ONNX file with the declared names and a dynamic batch axis."""
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old for the dynamo exporter; use {MIN_OPSET} or newer")
    path = Path(path)
    (image,) = inputs
    example = torch.rand(2, *image.shape[1:])
    batch = torch.export.Dim("N", min=1, max=MAX_DYNAMIC_BATCH)
    # The exporter logs harmless notes (e.g. torchvision ops it skips); keep the CLI output clean.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, input_names=[image.name],
                output_names=[spec.name for spec in outputs], opset_version=opset,
                dynamic_shapes={"lr": {0: batch}}, verbose=False,
            )
        except Exception as err:  # the exporter raises many types; report them as one
            raise ExportError(f"ONNX export failed at opset {opset}: {err}") from err
    program.save(str(path), external_data=False)
    written = file_opset(path)
    if written != opset:
        raise ExportError(f"--opset {opset} was asked for, but the exporter wrote opset {written}; use "
                          f"--opset {written} (or leave it out for {DEFAULT_OPSET})")
    return path


def file_opset(path: str | os.PathLike) -> int:
    """The default-domain opset recorded in an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_onnx(path: str | os.PathLike) -> None:
    """ONNX checker (full, with shape inference); raises ExportError with the checker's message."""
    import onnx

    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except (onnx.checker.ValidationError, onnx.onnx_cpp2py_export.shape_inference.InferenceError) as err:
        raise ExportError(f"{path}: ONNX checker failed: {err}") from err
