"""Checks of an exported graph, run through the runtime's own backend (the code path that ships).

Parity compares ONNX Runtime with PyTorch on real faces; every check refuses non-finite outputs, naming
them (`max(0.0, nan)` is 0.0, so an all-NaN model would otherwise pass a max-error test).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from runtime.artifact import ModelArtifact
from runtime.backends import infer_batched
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.contract import BatchProfile, TensorSpec

from . import ExportError

FP32_TOLERANCE = 1e-4
LANDMARK_AGREEMENT = 0.99  # share of landmark points whose arg-max must be identical


def onnx_artifact(onnx_path: Path, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...],
                  batch: BatchProfile) -> ModelArtifact:
    """A not-yet-published ONNX file as the runtime would load it."""
    return ModelArtifact(path=Path(onnx_path), inputs=inputs, outputs=outputs, batch=batch, onnx_path=Path(onnx_path))


def run_onnx(artifact: ModelArtifact, images: np.ndarray, int8_kernels: str = "auto"
             ) -> tuple[dict[str, np.ndarray], str]:
    """All outputs for `images` through the runtime's ONNX Runtime backend; returns (outputs, provider).
    `int8_kernels`: how the CPU provider computes Q/DQ graphs (`runtime.cpu_int8`)."""
    with OnnxRuntimeBackend(artifact, int8_kernels=int8_kernels) as backend:
        outputs = infer_batched(backend, images)
        provider = backend.session.get_providers()[0]
    return outputs, provider


def check_finite(outputs: dict[str, np.ndarray], where: str) -> None:
    """ExportError naming every output that holds NaN or Inf, with counts."""
    bad = {name: int((~np.isfinite(array)).sum()) for name, array in outputs.items()}
    bad = {name: count for name, count in bad.items() if count}
    if bad:
        listed = ", ".join(f"{name!r}: {count} of {outputs[name].size} values" for name, count in bad.items())
        raise ExportError(f"{where} produced non-finite values (NaN/Inf) in {listed}. The weights are corrupt or "
                          "diverged (check them with `python -m training.evaluate`); nothing was written.")


def verify_parity(reference, artifact: ModelArtifact, faces: np.ndarray, source: str) -> dict:
    """Compare the ONNX graph (runtime backend) with the PyTorch `reference` at batch 1 and len(faces)."""
    import torch

    names = [spec.name for spec in artifact.outputs]
    image_name = artifact.image_output.name
    worst, agreement, landmark_error, provider = 0.0, [], 0.0, ""
    maps = [name for name in names if name not in (image_name, "landmarks")]  # e.g. MSFSR's boundary maps
    maps_error = 0.0
    for batch in (faces[:1], faces):
        onnx_out, provider = run_onnx(artifact, batch)
        with torch.no_grad():
            torch_out = reference(torch.from_numpy(batch))
        torch_out = dict(zip(names, (t.numpy() for t in (torch_out if isinstance(torch_out, tuple) else (torch_out,)))))
        check_finite(torch_out, "the PyTorch model")
        check_finite(onnx_out, "the exported ONNX graph")
        worst = max(worst, float(np.abs(onnx_out[image_name] - torch_out[image_name]).max()))
        for name in maps:
            maps_error = max(maps_error, float(np.abs(onnx_out[name] - torch_out[name]).max()))
        if "landmarks" in onnx_out:
            agreement.append(float(np.all(onnx_out["landmarks"] == torch_out["landmarks"], axis=-1).mean()))
            landmark_error = max(landmark_error, float(np.abs(onnx_out["landmarks"] - torch_out["landmarks"]).max()))
    result = {"inputs": source, "faces": int(len(faces)), "batch_sizes": [1, int(len(faces))],
              "runtime": f"runtime onnxruntime backend, {provider}", "sr_max_abs_error": worst,
              "tolerance": FP32_TOLERANCE}
    if agreement:
        result["landmarks_identical_share"] = min(agreement)
        result["landmarks_max_abs_error_px"] = landmark_error
    if maps:
        result["maps_max_abs_error"] = maps_error
    result["passed"] = (max(worst, maps_error) <= FP32_TOLERANCE
                        and min(agreement, default=1.0) >= LANDMARK_AGREEMENT)
    return result


TILING_MIN_PSNR_DB = 40.0  # tiled vs whole-image output of the same model; PFSR x8 / x4 measure 46-55 dB


def check_tiling(reference, artifact: ModelArtifact, regions: np.ndarray, source: str) -> dict:
    """Does the exported graph, run on overlapping tiles (`runtime.tiles`), give what the PyTorch model gives
    on the whole region? `regions`: float32 RGB [N, 3, S, S] in [0, 1], S larger than the input.

    Returns the check, with the tile geometry under "tiling" (what the manifest records) when it passed."""
    import torch

    from runtime.faces import from_model_output
    from runtime.tiles import Tiling, enhance_regions
    from training.metrics import psnr as whole_psnr

    from .quality import PSNR_CAP_DB

    tiling = Tiling.for_input(artifact.input_hw[0])
    with OnnxRuntimeBackend(artifact) as backend:
        name = artifact.image_output.name
        tiled = enhance_regions(lambda batch: infer_batched(backend, batch)[name], from_model_output(regions), tiling)
    with torch.no_grad():
        whole = reference(torch.from_numpy(regions))
    whole = from_model_output((whole[0] if isinstance(whole, tuple) else whole).numpy())
    psnr = min(whole_psnr(np.stack(tiled), np.stack(whole)), PSNR_CAP_DB)  # all pixels of all regions
    result = {"inputs": source, "regions": len(regions), "region_px": int(regions.shape[-1]),
              "stride": tiling.stride, "ramp": tiling.ramp, "psnr_db": round(psnr, 2),
              "min_psnr_db": TILING_MIN_PSNR_DB, "passed": psnr >= TILING_MIN_PSNR_DB}
    if result["passed"]:
        result["tiling"] = tiling.to_dict()
    return result
