"""Panini-Net (lite) training task."""
from __future__ import annotations


import torch
import torch.nn as nn
import torch.nn.functional as F


from ..data import HR_SIZE
from .base import Batch, _Task


class PaniniTask(_Task):
    """Panini-Net, PSNR-oriented: L1(SR, HR), upstream's pixel loss (weight 1). Left out (see the model card):
    upstream's VGG16 perceptual term and StyleGAN2 discriminator (no pretrained VGG or StyleGAN2 prior can be
    loaded here). The shared faces are 128 px, so only configs with out_size 128 train here."""

    name = "panini"

    def build_model(self, config) -> nn.Module:
        if config.out_size != HR_SIZE:
            raise ValueError(f"the shared faces are {HR_SIZE} px: Panini trains here only with out_size "
                             f"{HR_SIZE} (e.g. --config lite), got {config.out_size}")
        self.lr_size = config.in_size
        return super().build_model(config)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        l1 = F.l1_loss(model(batch.lr).float(), batch.hr.float())
        return l1, {"l1": float(l1.detach())}

    @torch.no_grad()
    def predict(self, model: nn.Module, lr: torch.Tensor, steps: int | None = None):
        return [model(lr).clamp(0, 1)], []
