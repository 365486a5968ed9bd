"""Training tasks: what a model-specific part of training needs, so the loop in `train.py` stays generic.

A task knows how to build its model from a config, turn a batch of uint8 arrays into tensors, compute
the loss, and produce the SR image used for validation. A later PFSR model adds a task here and
registers it in `TASKS`; the loop, checkpointing and validation are reused as they are.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import create_model, model_spec
from models.dic import DICConfig

from .data import HEATMAP_SIZE, HR_SIZE, flip_landmarks, make_heatmaps

# Training-only named configs (the weights file stores the full config, so loading needs no name).
# "cpu_demo": "tiny" with 2 steps — measured 1.5 s per batch of 8 (fwd+bwd, 2 threads) vs 2.2-4 s for 3 steps.
EXTRA_DIC_CONFIGS = {
    "cpu_demo": DICConfig(num_features=16, num_groups=2, hg_num_feature=32, num_fusion_block=1, num_steps=2),
}

__all__ = ["EXTRA_DIC_CONFIGS", "Batch", "DICTask", "TASKS", "get_task", "sample_batch"]


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
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)


def sample_batch(split, indices: np.ndarray, flips: np.ndarray | None = None, device="cpu",
                 pin_memory: bool = False, channels_last: bool = False) -> Batch:
    """Gather a batch from a decoded split; `flips` (bool per sample) mirrors images + landmarks."""
    hr = split.hr[indices]
    lr = split.lr[indices]
    landmarks = split.landmarks[indices].copy()
    if flips is not None and flips.any():
        hr = hr.copy()
        lr = lr.copy()
        hr[flips] = hr[flips][:, :, ::-1]
        lr[flips] = lr[flips][:, :, ::-1]
        landmarks[flips] = flip_landmarks(landmarks[flips], HR_SIZE)
    tensors = [_to_tensor(lr), _to_tensor(hr), torch.from_numpy(landmarks)]
    device = torch.device(device)
    if device.type == "cuda" and pin_memory:
        tensors = [t.pin_memory() for t in tensors]
    tensors = [t.to(device, non_blocking=True) for t in tensors]
    if channels_last:
        tensors[0] = tensors[0].contiguous(memory_format=torch.channels_last)
        tensors[1] = tensors[1].contiguous(memory_format=torch.channels_last)
    return Batch(*tensors)


class DICTask:
    """DIC / DICGAN generator, the paper's loss: sum over steps of L1(SR_t, HR) + w * MSE(heatmap_t, GT)."""

    name = "dic"

    def __init__(self, heatmap_weight: float = 0.1, heatmap_sigma: float = 1.0):
        self.heatmap_weight = heatmap_weight
        self.heatmap_sigma = heatmap_sigma
        self.spec = model_spec("dic")

    def configs(self) -> dict:
        return {**self.spec.configs, **EXTRA_DIC_CONFIGS}

    def resolve_config(self, name_or_dict):
        if isinstance(name_or_dict, str) and name_or_dict.lstrip().startswith("{"):
            name_or_dict = json.loads(name_or_dict)  # inline JSON config, e.g. for tests
        if isinstance(name_or_dict, dict):
            return self.spec.config_from_dict(name_or_dict)
        configs = self.configs()
        if name_or_dict not in configs:
            raise ValueError(f"unknown dic config {name_or_dict!r}; available: {', '.join(configs)}")
        return configs[name_or_dict]

    def build_model(self, config) -> nn.Module:
        return create_model("dic", config).train()

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        sr_steps, heatmap_steps = model.unroll(batch.lr)
        target = make_heatmaps(batch.landmarks, HEATMAP_SIZE, 4.0, self.heatmap_sigma)
        l1 = sum(F.l1_loss(sr.float(), batch.hr.float()) for sr in sr_steps)
        hm = sum(F.mse_loss(h.float(), target) for h in heatmap_steps)
        total = l1 + self.heatmap_weight * hm
        return total, {"l1": float(l1.detach()), "heatmap": float(hm.detach())}

    @torch.no_grad()
    def predict(self, model: nn.Module, lr: torch.Tensor, steps: int | None = None):
        """-> (sr_steps, heatmap_steps) for evaluation (all steps up to `steps`)."""
        return model.unroll(lr, steps=steps, last_heatmap=True)


TASKS = {"dic": DICTask}


def get_task(name: str, **kwargs):
    if name not in TASKS:
        raise ValueError(f"no training task for model {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name](**kwargs)
