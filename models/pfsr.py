"""PFSR: Progressive Face Super-Resolution via Attention to Facial Landmark (Kim et al., BMVC 2019).

Upstream: github.com/DeokyunKim/Progressive-Face-Super-Resolution (model.py, `Generator`). This is
an independent re-implementation; module and parameter names follow the upstream generator
(`step1`, `step2`, `step3`, `to_rgb`, equalized convs stored as `conv.weight_orig`) so its
checkpoints load strictly. The code is our own.

Structure (16x16 -> 128x128, three x2 steps; C = width, 512 in the paper):
  step1: conv3x3 3->C, BN, ReLU, ResBlock(C),   ConvT(C -> C/2, k4 s2 p1), BN, ReLU   -> 32x32
  step2:                         ResBlock(C/2), ConvT(C/2 -> C/4),          BN, ReLU   -> 64x64
  step3:                         ResBlock(C/4), ConvT(C/4 -> C/8),          BN, ReLU   -> 128x128
  to_rgb[k]: 1x1 conv of step k+1's features -> RGB
ResBlock: x + [EqConv3x3, BN, ReLU, EqConv3x3, BN, ReLU](x), with equalized learning rate
(weight scaled by sqrt(2 / fan_in) at run time).

Upstream works on images in [-1, 1]; this module takes and returns RGB in [0, 1] and converts
inside, so upstream weights work unchanged under the project's I/O contract. Progressive training
blends the previous step's RGB (nearest-upsampled x2) with the new step's RGB by `alpha`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .config import ConfigDict

__all__ = ["PFSRConfig", "PFSR", "PFSR_CONFIGS", "PFSR_X4_CONFIGS", "EqualConv2d", "ResBlock", "FusedPFSR", "fuse_pfsr", "NUM_STAGES"]

NUM_STAGES = 3  # x2 steps of the paper's x8 model: 16 -> 32 -> 64 -> 128
OUTPUT_SIZE = 128


@dataclass(frozen=True)
class PFSRConfig(ConfigDict):
    """`width`: channels of step 1 (halved after each upsampling); 512 is the paper's generator.
    `scale`: 8 (the paper's 16 -> 128, three x2 steps) or 4 (32 -> 128, two: this project's x4 variant for
    faces of about 24-48 px; same blocks, `step1`/`step2` and two `to_rgb`)."""

    model_label = "PFSR"

    width: int = 512
    scale: int = 8
    # Weights saved before models declared their I/O carry "num_steps": 1; PFSR is not recurrent.
    retired_keys = {"num_steps": 1}

    def __post_init__(self):
        if self.scale not in (4, 8):
            raise ValueError(f"PFSR supports scale=8 (16->128) or scale=4 (32->128), got scale={self.scale}")
        if self.width < 8 or self.width % 8:
            raise ValueError(f"width must be a positive multiple of 8 (it is halved 3 times), got {self.width}")

    @property
    def num_stages(self) -> int:
        return self.scale.bit_length() - 1  # log2: x2 steps

    @property
    def input_size(self) -> int:
        return OUTPUT_SIZE // self.scale

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels out of each step (inputs of to_rgb[0..])."""
        return tuple(self.width // 2 ** (k + 1) for k in range(self.num_stages))


PFSR_CONFIGS = {
    "default": PFSRConfig(512),  # the paper's generator, 10.5 GFLOP per face
    "half": PFSRConfig(256),  # 1/4 of the compute
    "quarter": PFSRConfig(128),  # 1/16 of the compute
    "tiny": PFSRConfig(16),  # tests
}
# The x4 variant (registered as "pfsr_x4"): 32 -> 128 in two steps, for faces of about 20-40 px.
PFSR_X4_CONFIGS = {
    "quarter": PFSRConfig(128, scale=4),  # 20.7 faces/s fwd+bwd at batch 16 on 2 CPU threads (half: 7.1)
    "half": PFSRConfig(256, scale=4),
    "tiny": PFSRConfig(16, scale=4),  # tests
}


class _EqualizedConv(nn.Module):
    """nn.Conv2d whose stored weight (`weight_orig`, N(0,1) at init) is scaled by sqrt(2 / fan_in)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = math.sqrt(2.0 / (in_channels * kernel_size * kernel_size))
        self.padding = padding

    def effective_weight(self) -> torch.Tensor:
        return self.weight_orig * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)


class EqualConv2d(nn.Module):
    """Wrapper that gives the upstream parameter names `conv.weight_orig` / `conv.bias`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1):
        super().__init__()
        self.conv = _EqualizedConv(in_channels, out_channels, kernel_size, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            EqualConv2d(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(),
            EqualConv2d(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


def _upsample_block(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(out_channels), nn.ReLU()]


class PFSR(nn.Module):
    """PFSR generator. `forward(lr, stage=None, alpha=1.0)` -> RGB in [0, 1] at input * 2**stage pixels
    (stage None: all of them)."""

    supports_landmarks = False

    def __init__(self, config: PFSRConfig = PFSRConfig()):
        super().__init__()
        self.config = config
        c = config.width
        channels = config.stage_channels
        self.step1 = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                   ResBlock(c), *_upsample_block(c, channels[0]))
        for k in range(1, config.num_stages):  # step2, step3: upstream names
            self.add_module(f"step{k + 1}", nn.Sequential(ResBlock(channels[k - 1]),
                                                           *_upsample_block(channels[k - 1], channels[k])))
        self.to_rgb = nn.ModuleList([nn.Conv2d(ch, 3, 1) for ch in channels])

    def stages(self) -> list[nn.Module]:
        return [getattr(self, f"step{k + 1}") for k in range(self.config.num_stages)]

    def forward(self, lr: torch.Tensor, stage: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        stage = self.config.num_stages if stage is None else stage
        if not 1 <= stage <= self.config.num_stages:
            raise ValueError(f"stage must be 1..{self.config.num_stages}, got {stage}")
        features = lr * 2.0 - 1.0  # upstream range [-1, 1]
        previous = None
        for step in self.stages()[:stage]:
            previous = features
            features = step(features)
        rgb = self.to_rgb[stage - 1](features)
        if stage > 1 and alpha < 1.0:
            skip = F.interpolate(self.to_rgb[stage - 2](previous), scale_factor=2, mode="nearest")
            rgb = (1.0 - alpha) * skip + alpha * rgb
        return rgb * 0.5 + 0.5

    def unroll(self, lr: torch.Tensor, steps: int | None = None, last_heatmap: bool = False):
        """The common SR-model interface (see models.dic.DIC.unroll): ([sr 128x128], no heatmaps)."""
        if steps not in (None, 1):
            raise ValueError(f"PFSR is not recurrent: steps must be 1, got {steps}")
        if last_heatmap:
            raise ValueError("PFSR has no landmark branch (last_heatmap=True is not available)")
        return [self(lr)], []

    def fused(self) -> "FusedPFSR":
        """Inference copy with every BatchNorm folded into its conv (eval statistics) and the
        [-1, 1] output mapping folded into the last to_rgb conv. Full resolution only."""
        return fuse_pfsr(self)


# --- BatchNorm folding for export -----------------------------------------------------------------


def _fold(conv_weight, conv_bias, bn: nn.BatchNorm2d, transpose: bool = False) -> tuple[nn.Parameter, nn.Parameter]:
    return fuse_conv_bn_weights(conv_weight.detach(), conv_bias.detach(), bn.running_mean, bn.running_var,
                                bn.eps, bn.weight.detach(), bn.bias.detach(), transpose=transpose)


def _folded_conv(weight, bias, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], weight.shape[-1], padding=padding)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


class _FusedResBlock(nn.Module):
    def __init__(self, block: ResBlock):
        super().__init__()
        eq1, bn1, _, eq2, bn2, _ = block.conv
        self.conv1 = _folded_conv(*_fold(eq1.conv.effective_weight(), eq1.conv.bias, bn1), padding=1)
        self.conv2 = _folded_conv(*_fold(eq2.conv.effective_weight(), eq2.conv.bias, bn2), padding=1)

    def forward(self, x):
        return x + F.relu(self.conv2(F.relu(self.conv1(x))))


def _fused_upsample(convt: nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> list[nn.Module]:
    weight, bias = _fold(convt.weight, convt.bias, bn, transpose=True)
    fused = copy.deepcopy(convt)
    fused.weight, fused.bias = weight, bias
    return [fused, nn.ReLU()]


class _InputToSymmetric(nn.Module):
    def forward(self, x):
        return x * 2.0 - 1.0


class FusedPFSR(nn.Sequential):
    """Inference-only PFSR (see `fuse_pfsr`), with the same `unroll` interface as the model."""

    supports_landmarks = False

    def unroll(self, lr: torch.Tensor, steps: int | None = None, last_heatmap: bool = False):
        if steps not in (None, 1) or last_heatmap:
            raise ValueError("PFSR is not recurrent and has no landmark branch")
        return [self(lr)], []


def fuse_pfsr(model: PFSR) -> FusedPFSR:
    """Conv/ConvTranspose/ReLU layers and residual adds only, equal to `model(lr)` in eval mode."""
    s1, *later = model.stages()
    first = _folded_conv(*_fold(s1[0].weight, s1[0].bias, s1[1]), padding=1)
    layers = [_InputToSymmetric(), first, nn.ReLU(), _FusedResBlock(s1[3]), *_fused_upsample(s1[4], s1[5])]
    for step in later:
        layers += [_FusedResBlock(step[0]), *_fused_upsample(step[1], step[2])]
    to_rgb = copy.deepcopy(model.to_rgb[-1])
    with torch.no_grad():  # y * 0.5 + 0.5 folded into the 1x1 conv
        to_rgb.weight.mul_(0.5)
        to_rgb.bias.mul_(0.5).add_(0.5)
    layers.append(to_rgb)
    fused = FusedPFSR(*layers).eval().requires_grad_(False)
    fused.config = model.config
    return fused
