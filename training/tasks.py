"""Training tasks: what a model-specific part of training needs, so the loop in `train.py` stays generic.

A task knows how to build its model from a config, turn a batch of uint8 arrays into tensors, compute
the loss, and produce the SR image used for validation. Every task also has
`set_iteration(iteration, total)` (a schedule hook, e.g. PFSR's progressive steps) and
`final_model_ready` (whether validation scores may select the best checkpoint yet).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import create_model, model_spec
from runtime.frames import hwc_uint8_to_nchw
from models.dic import DICConfig
from models.pfsr import NUM_STAGES

from .data import HEATMAP_SIZE, HR_SIZE, flip_landmarks, make_heatmaps

# Training-only named configs (the weights file stores the full config, so loading needs no name).
# "cpu_demo": "tiny" with 2 steps — measured 1.5 s per batch of 8 (fwd+bwd, 2 threads) vs 2.2-4 s for 3 steps.
EXTRA_DIC_CONFIGS = {
    "cpu_demo": DICConfig(num_features=16, num_groups=2, hg_num_feature=32, num_fusion_block=1, num_steps=2),
}

__all__ = ["EXTRA_DIC_CONFIGS", "Batch", "DICTask", "PFSRTask", "ProgressiveSchedule", "TASKS", "get_task",
           "sample_batch", "attention_map"]


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


class _Task:
    """Shared parts: named configs (registry + extra), inline JSON configs, no schedule."""

    name = ""
    extra_configs: dict = {}
    final_model_ready = True
    lr_size = 16  # LR side of the training pairs (set from the config by tasks whose models differ)

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


class DICTask(_Task):
    """DIC / DICGAN generator, the paper's loss: sum over steps of L1(SR_t, HR) + w * MSE(heatmap_t, GT)."""

    name = "dic"
    extra_configs = EXTRA_DIC_CONFIGS

    def __init__(self, heatmap_weight: float = 0.1, heatmap_sigma: float = 1.0):
        super().__init__()
        self.heatmap_weight = heatmap_weight
        self.heatmap_sigma = heatmap_sigma

    @classmethod
    def from_args(cls, args) -> "DICTask":
        return cls(heatmap_weight=args.heatmap_weight)

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


@dataclass(frozen=True)
class ProgressiveSchedule:
    """Which PFSR step trains at an iteration, and its blend factor alpha.

    `fractions`: share of the iterations spent with 1, 2 (and 3) steps; after each switch alpha grows
    linearly from 0 to 1 over `fade` of that stage, blending in the new step's RGB.
    """

    fractions: tuple[float, ...] = (0.1, 0.2, 0.7)
    fade: float = 0.5

    @classmethod
    def for_stages(cls, stages: int) -> "ProgressiveSchedule":
        """The x8 model's shares (10 / 20 / 70 %); the x4 model (2 steps) gives its first step 30 %."""
        return cls() if stages == NUM_STAGES else cls((0.3, 0.7))

    def at(self, iteration: int, total: int) -> tuple[int, float]:
        start = 0
        for stage, share in enumerate(self.fractions, start=1):
            length = round(share * total)
            if iteration < start + length or stage == len(self.fractions):
                if stage == 1:
                    return 1, 1.0
                return stage, min(1.0, (iteration - start) / max(1.0, length * self.fade))
            start += length
        raise AssertionError("unreachable")


def attention_map(landmarks: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Facial attention weights [N, 1, size, size]: max over the 68 landmark Gaussians (peak 1).

    PFSR weights its pixel loss by landmark heatmaps of a distilled face-alignment network; here
    they are rendered from the data set's 68-point labels instead.
    """
    heatmaps = make_heatmaps(landmarks, size, HR_SIZE / size, sigma)
    return heatmaps.amax(dim=1, keepdim=True)


class PFSRTask(_Task):
    """PFSR generator, progressive: L1(SR_s, HR_s) + w * mean(attention_s * |SR_s - HR_s|) at step s.

    HR_s is the HR image area-downsampled to step s's resolution (32, 64, 128). Left out (see the
    model card): the paper's heatmap loss (needs a landmark network on the SR output) and the
    WGAN-GP / perceptual terms; this is the PSNR-oriented part of the PFSR objective.
    """

    name = "pfsr"

    def __init__(self, attention_weight: float = 1.0, attention_sigma_128: float = 3.0,
                 schedule: ProgressiveSchedule | None = None):
        super().__init__()
        self.attention_weight = attention_weight
        self.attention_sigma_128 = attention_sigma_128  # Gaussian sigma in 128-px pixels, scaled per step
        self.schedule = schedule or ProgressiveSchedule()
        self.stage, self.alpha = NUM_STAGES, 1.0

    def build_model(self, config) -> nn.Module:
        """Also sets the schedule and LR size for the config's scale (x8: 3 steps from 16 px, x4: 2 from 32)."""
        if len(self.schedule.fractions) != config.num_stages:
            self.schedule = ProgressiveSchedule.for_stages(config.num_stages)
        self.stage, self.lr_size = config.num_stages, config.input_size
        return super().build_model(config)

    @classmethod
    def from_args(cls, args) -> "PFSRTask":
        return cls(attention_weight=args.attention_weight)

    @property
    def final_model_ready(self) -> bool:
        return self.stage == len(self.schedule.fractions) and self.alpha >= 1.0

    def set_iteration(self, iteration: int, total: int) -> None:
        self.stage, self.alpha = self.schedule.at(iteration, total)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        sr = model(batch.lr, self.stage, self.alpha).float()
        size = sr.shape[-1]
        target = batch.hr.float() if size == HR_SIZE else F.interpolate(batch.hr.float(), size=size, mode="area")
        error = (sr - target).abs()
        weights = attention_map(batch.landmarks, size, self.attention_sigma_128 * size / HR_SIZE)
        l1 = error.mean()
        attention = (error * weights).mean()
        total = l1 + self.attention_weight * attention
        return total, {"l1": float(l1.detach()), "attention": float(attention.detach())}

    def status(self) -> str:
        return f"step {self.stage} alpha {self.alpha:.2f}"

    @torch.no_grad()
    def predict(self, model: nn.Module, lr: torch.Tensor, steps: int | None = None):
        """-> ([SR 128x128], []). Before the last step is fully blended in, the current step's output
        is bicubic-upsampled to 128 so that validation follows training."""
        if self.final_model_ready:
            return model.unroll(lr, steps=steps)
        sr = model(lr, self.stage, self.alpha)
        return [F.interpolate(sr, size=HR_SIZE, mode="bicubic", align_corners=False).clamp(0, 1)], []


class PFSRX4Task(PFSRTask):
    """The x4 variant (32 -> 128, two progressive steps), same objective."""

    name = "pfsr_x4"


TASKS = {"dic": DICTask, "pfsr": PFSRTask, "pfsr_x4": PFSRX4Task}


def get_task(name: str, args=None, **kwargs):
    """The training task for a model: from parsed CLI `args` (task-specific options), else `kwargs`."""
    if name not in TASKS:
        raise ValueError(f"no training task for model {name!r}; available: {', '.join(TASKS)}")
    return TASKS[name].from_args(args) if args is not None else TASKS[name](**kwargs)
