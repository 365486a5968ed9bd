"""What every training task shares: the batch, its sampling from a decoded split, the task base class and
validation helpers."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from models import create_model, model_spec
from runtime.frames import hwc_uint8_to_nchw

from ..batches import pairs
from ..metrics import CROP_BORDER, psnr, rgb_to_y, to_uint8


@dataclass
class Batch:
    lr: torch.Tensor  # [N, 3, 16, 16] float in [0, 1]
    hr: torch.Tensor  # [N, 3, 128, 128]
    landmarks: torch.Tensor  # [N, 68, 2] (x, y) in HR pixels
    extras: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.lr.shape[0]


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1]."""
    return torch.from_numpy(hwc_uint8_to_nchw(images))


def sample_batch(split, indices: np.ndarray, flips: np.ndarray | None = None, device="cpu",
                 pin_memory: bool = False, channels_last: bool = False, augment=None,
                 rng: np.random.Generator | None = None) -> Batch:
    """Gather a batch from a decoded split; `flips` (bool per sample) mirrors images + landmarks; `augment`
    (e.g. `training.augment.RealFraming`) then re-makes the pairs with `rng`."""
    return to_batch(*pairs(split, indices, flips, augment, rng), device=device, pin_memory=pin_memory,
                    channels_last=channels_last)


def to_batch(hr: np.ndarray, lr: np.ndarray, landmarks: np.ndarray, device="cpu", pin_memory: bool = False,
             channels_last: bool = False) -> Batch:
    """Numpy pairs (uint8 [N, H, W, 3] images, [N, K, 2] landmarks) as a Batch on `device`."""
    tensors = [_to_tensor(lr), _to_tensor(hr), torch.from_numpy(landmarks)]
    device = torch.device(device)
    if device.type == "cuda" and pin_memory:
        tensors = [t.pin_memory() for t in tensors]
    tensors = [t.to(device, non_blocking=True) for t in tensors]
    if channels_last:
        tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        tensors[1] = tensors[1].contiguous(memory_format=torch.channels_last)
    return Batch(*tensors)


class _Task:
    """Shared parts: named configs (registry + extra), inline JSON configs, no schedule."""

    name = ""
    extra_configs: dict = {}
    final_model_ready = True
    lr_size = 16  # LR side of the training pairs (set from the config by tasks whose models differ)
    augment = None  # a training-pair transform (`--real-framing`), validation stays clean

    def __init__(self):
        self.spec = model_spec(self.name)

    @classmethod
    def from_args(cls, args) -> "_Task":
        return cls()

    def set_iteration(self, iteration: int, total: int) -> None:
        """Called before every training iteration."""

    def status(self) -> str:
        """Schedule state for the training log ('' when there is none)."""
        return ""

    def configs(self) -> dict:
        return {**self.spec.configs, **self.extra_configs}

    def resolve_config(self, name_or_dict):
        """A config name, a dict, or inline JSON (e.g. for tests) -> config object."""
        if isinstance(name_or_dict, str) and name_or_dict.lstrip().startswith("{"):
            name_or_dict = json.loads(name_or_dict)
        if isinstance(name_or_dict, dict):
            return self.spec.config_from_dict(name_or_dict)
        configs = self.configs()
        if name_or_dict not in configs:
            raise ValueError(f"unknown {self.name} config {name_or_dict!r}; available: {', '.join(configs)}")
        return configs[name_or_dict]

    def build_model(self, config) -> nn.Module:
        return create_model(self.name, config).train()

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups (one group at `lr` unless a task trains parts at other rates)."""
        return [{"params": list(model.parameters()), "lr": lr}]

    @torch.no_grad()
    def validate(self, model: nn.Module, split, device, batch_size: int = 25) -> dict:
        """Validation metrics: mean Y-PSNR (official DIC metric) of the last step."""
        return {"psnr": _mean_y_psnr(self, model, split, device, batch_size)}

    def score(self, metrics: dict) -> float | None:
        """Higher is better; None when this model may not be selected as the best checkpoint."""
        return metrics["psnr"]

    def state_dict(self) -> dict:
        """What the task itself trains besides the model (e.g. a discriminator), for exact resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no training state, got {sorted(state)}")


def _validation_batches(split, device, batch_size: int):
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        yield idx, sample_batch(split, idx, device=device)


def _mean_y_psnr(task, model: nn.Module, split, device, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    scores = []
    for idx, batch in _validation_batches(split, device, batch_size):
        scores.extend(_y_psnrs(to_uint8(task.predict(model, batch.lr)[0][-1]), split, idx))
    model.train(was_training)
    return float(np.mean(scores))


def _y_psnrs(sr: np.ndarray, split, idx: np.ndarray) -> list[float]:
    """Y-PSNR (official DIC metric) of uint8 SR images against the split's HR images `idx`."""
    c = CROP_BORDER
    return [psnr(rgb_to_y(sr[i])[c:-c, c:-c], rgb_to_y(split.hr[k])[c:-c, c:-c]) for i, k in enumerate(idx)]


def weighted_heatmap_mse(heatmaps: torch.Tensor, target: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """mean((1 + w * [target > 0.1]) * (h - target)^2): with w > 0 the few peak cells outweigh the flat
    background, so predicting all zeros (a plateau plain MSE falls onto) is no longer nearly optimal."""
    error = (heatmaps.float() - target) ** 2
    if foreground_weight:
        error = error * (1.0 + foreground_weight * (target > 0.1).float())
    return error.mean()
