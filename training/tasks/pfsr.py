"""PFSR training tasks (x8 and x4): progressive steps, facial attention loss."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.pfsr import NUM_STAGES

from ..data import HR_SIZE, make_heatmaps
from .base import Batch, _Task


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

    @classmethod
    def final_only(cls, stages: int) -> "ProgressiveSchedule":
        """Every iteration on the whole model (fine-tuning a trained one): the last step, fully blended in."""
        return cls((0.0,) * (stages - 1) + (1.0,), fade=0.0)

    def at(self, iteration: int, total: int) -> tuple[int, float]:
        start = 0
        for stage, share in enumerate(self.fractions, start=1):
            length = round(share * total)
            if iteration < start + length or stage == len(self.fractions):
                if stage == 1 or self.fade == 0:
                    return stage, 1.0
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


PIXEL_LOSSES = ("l1", "mse")


class PFSRTask(_Task):
    """PFSR generator, progressive: L1(SR_s, HR_s) + w * mean(attention_s * |SR_s - HR_s|) at step s
    (`pixel_loss="mse"`: squared errors in both terms, the PSNR-optimal choice for fine-tuning).

    HR_s is the HR image area-downsampled to step s's resolution (32, 64, 128). Left out (see the
    model card): the paper's heatmap loss (needs a landmark network on the SR output) and the
    WGAN-GP / perceptual terms; this is the PSNR-oriented part of the PFSR objective.
    """

    name = "pfsr"

    def __init__(self, attention_weight: float = 1.0, attention_sigma_128: float = 3.0,
                 schedule: ProgressiveSchedule | None = None, final_stage_only: bool = False,
                 pixel_loss: str = "l1"):
        super().__init__()
        if pixel_loss not in PIXEL_LOSSES:
            raise ValueError(f"pixel loss {pixel_loss!r}; expected one of {', '.join(PIXEL_LOSSES)}")
        self.pixel_loss = pixel_loss
        self.attention_weight = attention_weight
        self.attention_sigma_128 = attention_sigma_128  # Gaussian sigma in 128-px pixels, scaled per step
        self.schedule = schedule or ProgressiveSchedule()
        self.final_stage_only = final_stage_only  # fine-tuning: no progressive growing
        self.stage, self.alpha = NUM_STAGES, 1.0

    def build_model(self, config) -> nn.Module:
        """Also sets the schedule and LR size for the config's scale (x8: 3 steps from 16 px, x4: 2 from 32)."""
        if self.final_stage_only:
            self.schedule = ProgressiveSchedule.final_only(config.num_stages)
        elif len(self.schedule.fractions) != config.num_stages:
            self.schedule = ProgressiveSchedule.for_stages(config.num_stages)
        self.stage, self.lr_size = config.num_stages, config.input_size
        return super().build_model(config)

    @classmethod
    def from_args(cls, args) -> "PFSRTask":
        return cls(attention_weight=args.attention_weight, final_stage_only=args.final_stage_only,
                   pixel_loss=args.pixel_loss)

    @property
    def final_model_ready(self) -> bool:
        return self.stage == len(self.schedule.fractions) and self.alpha >= 1.0

    def set_iteration(self, iteration: int, total: int) -> None:
        self.stage, self.alpha = self.schedule.at(iteration, total)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        sr = model(batch.lr, self.stage, self.alpha).float()
        size = sr.shape[-1]
        target = batch.hr.float() if size == HR_SIZE else F.interpolate(batch.hr.float(), size=size, mode="area")
        error = (sr - target).abs() if self.pixel_loss == "l1" else (sr - target).square()
        weights = attention_map(batch.landmarks, size, self.attention_sigma_128 * size / HR_SIZE)
        pixel = error.mean()
        attention = (error * weights).mean()
        total = pixel + self.attention_weight * attention
        return total, {self.pixel_loss: float(pixel.detach()), "attention": float(attention.detach())}

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
