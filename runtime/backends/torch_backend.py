"""PyTorch backend, for desktop users without TensorRT who have the training side installed.

Not part of the lean runtime: it needs torch and this repository's `models` package, both imported only
when this backend is activated. It reads the model name, architecture config, unrolled step count and
weights path from the artifact's manifest (as written by `python -m export.build`) and runs the model's
`unroll(lr, steps, last_heatmap=False)`, clamping the last step to [0, 1] as the exported graph does.
Only the image output is produced (landmark decoding lives in the exported graph).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..artifact import ModelArtifact
from ..errors import BackendError, ModelArtifactError
from ..files import sha256_of
from .base import Backend

log = logging.getLogger(__name__)


def _import_torch_side():
    try:
        import torch
        from models import create_model
    except ImportError as err:
        raise BackendError(f"the torch backend needs PyTorch and this repository's `models` package ({err}); "
                           "install the training side with pip install -e '.[export]', or use --backend "
                           "onnxruntime / tensorrt.") from err
    return torch, create_model


def weights_path(artifact: ModelArtifact) -> Path:
    """The weights file named by the manifest: absolute, or relative to the manifest or the working dir."""
    weights = artifact.manifest.weights
    if weights.random_init:
        raise ModelArtifactError(f"{artifact.path}: the torch backend needs a manifest whose weights have a path, "
                                 "but this artifact was exported with --random-init; pass the manifest written by "
                                 "`python -m export.build --weights PATH`.")
    path = Path(weights.path)
    candidates = [path] if path.is_absolute() else [artifact.manifest_path.parent / path, path]
    for candidate in candidates:
        if candidate.is_file():
            return _verified(candidate, weights.sha256, artifact)
    raise ModelArtifactError(f"weights file {weights.path} named by {artifact.manifest_path} was not found "
                             f"(looked at {', '.join(map(str, candidates))}); copy it there or re-export.")


def _verified(path: Path, sha256: str | None, artifact: ModelArtifact) -> Path:
    """The weights must be the file the export verified (its sha256 is in the manifest)."""
    if not sha256:
        raise ModelArtifactError(f"{artifact.manifest_path} records no sha256 of its weights {path}, so the torch "
                                 "backend cannot tell them from another file; re-export with `python -m export.build`.")
    if sha256_of(path) != sha256:
        raise ModelArtifactError(f"weights {path} do not match the sha256 in {artifact.manifest_path.name}: the file "
                                 "was changed or replaced after export. Re-export the model, or point the manifest at "
                                 "the original weights.")
    return path


class TorchBackend(Backend):
    """Runs the PyTorch model named by the manifest, on CUDA when available, else CPU."""

    name = "torch"

    def __init__(self, artifact: ModelArtifact):
        super().__init__(artifact)
        if artifact.manifest is None:
            raise ModelArtifactError(f"{artifact.path}: the torch backend needs the ONNX manifest naming the model and "
                                     "its weights; pass the manifest .json written by `python -m export.build`.")
        self.model = self.torch = None

    def _activate(self) -> None:
        self.torch, create_model = _import_torch_side()
        manifest = self.artifact.manifest
        self.device = "cuda" if self.torch.cuda.is_available() else "cpu"
        weights = weights_path(self.artifact)
        try:
            self.model = create_model(manifest.model, config=manifest.config or None, weights=str(weights))
        except (ValueError, OSError) as err:  # WeightsError is a ValueError: corrupt, mismatched or unsafe file
            raise ModelArtifactError(f"torch backend: cannot load {manifest.model} weights {weights}: {err}") from err
        self.model = self.model.to(self.device).eval()
        self.steps = manifest.steps
        log.info("torch backend: %s (%s steps) on %s", manifest.model, self.steps or "not recurrent", self.device)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        (array,) = feeds.values()
        with torch.inference_mode():
            lr = torch.from_numpy(np.ascontiguousarray(array)).to(self.device)
            sr_steps, _ = self.model.unroll(lr, self.steps, last_heatmap=False)
            sr = sr_steps[-1].clamp(0, 1).float().cpu().numpy()
        return {self.artifact.image_output.name: sr}

    def _deactivate(self) -> None:
        self.model = None
