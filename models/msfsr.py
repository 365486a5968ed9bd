"""MSFSR: multi-stage face SR with facial boundary heatmaps (Zhang, Wu, Chen, CVPR Workshops 2020).

Paper: "MSFSR: A Multi-Stage Face Super-Resolution with Accurate Facial Representation via Enhanced Facial
Boundaries". Upstream generator: github.com/cydiachen/MSFSR, model/MSFSR.py (no training code, no loss code).
This is an independent re-implementation; module names, parameter names and shapes follow the upstream
`Generator` so that its per-stage checkpoints load strictly (see `load_official_stages`).

One x2 stage (`MSFSRStage`, upstream `Generator`, BatchNorm throughout):

    x (S px) -> BUM: conv5 3->F, BN, ReLU, RCAB(F), conv3 F->F/2, BN, ReLU, conv3 -> 12, PixelShuffle 2
             -> coarse (2S px)
    coarse -> BEM: conv7/s2 -> Residual(->2B) -> ResNet blocks -> hourglasses -> conv1 -> 11 boundary maps (S px)
    coarse -> BFM_head: conv3/s2, BN, ReLU, ResNet block, SE, conv3, Tanh, SE -> F features (S px)
    [features, boundaries] -> BFM_Tail: conv3, BN, ReLU, SE, ConvTranspose x2, BN, ReLU, ResNet block, SE,
             conv3 -> RGB, Tanh -> output (2S px)

Three stages chained 16 -> 32 -> 64 -> 128; each returns (coarse, boundaries, output). Images are RGB in [0, 1]
in and out (upstream feeds ToTensor images and saves the Tanh output with ToPILImage, i.e. as [0, 1]).
The 11 boundaries (iBUG 68-point indices, from upstream's boundary script): jaw, each brow, nose bridge,
lower nose, each eye (closed), upper lip outer, upper lip inner, lower lip inner, lower lip outer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .config import ConfigDict

__all__ = ["MSFSRConfig", "MSFSR", "MSFSRStage", "MSFSR_CONFIGS", "BOUNDARIES_68", "load_official_stages"]

BOUNDARIES_68 = (
    tuple(range(0, 17)),  # jaw
    tuple(range(17, 22)),  # left brow
    tuple(range(22, 27)),  # right brow
    tuple(range(27, 34)),  # nose bridge
    tuple(range(31, 36)),  # lower nose
    tuple(range(36, 42)) + (36,),  # left eye, closed
    tuple(range(42, 48)) + (42,),  # right eye, closed
    tuple(range(48, 55)),  # upper lip, outer
    tuple(range(60, 65)),  # upper lip, inner
    (60, 67, 66, 65, 64),  # lower lip, inner
    (59, 58, 57, 56, 55, 54),  # lower lip, outer
)
NUM_STAGES = 3


@dataclass(frozen=True)
class MSFSRConfig(ConfigDict):
    """`features`: F (64 upstream); `boundary_width`: the boundary branch's width 2B (128 upstream)."""

    model_label = "MSFSR"

    features: int = 64
    boundary_width: int = 128
    boundary_blocks: int = 2  # ResNet blocks in the boundary branch
    hourglasses: int = 2
    hourglass_depth: int = 3
    num_boundaries: int = len(BOUNDARIES_68)
    input_size: int = 16
    scale: int = 8
    # Not upstream: each stage adds a bilinear x2 of its input to its coarse image and its output, so a stage
    # starts as bilinear upscaling and learns the residual. Upstream stages (False) regress the whole image,
    # which stayed below bicubic for thousands of CPU iterations here. No parameters: the layout is unchanged.
    upsample_skip: bool = False

    def __post_init__(self):
        if self.scale != 2 ** NUM_STAGES:
            raise ValueError(f"MSFSR has {NUM_STAGES} x2 stages: scale must be {2 ** NUM_STAGES}, got {self.scale}")
        for name in ("features", "boundary_width", "hourglasses", "hourglass_depth", "input_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.features % 16 or self.boundary_width % 2:
            raise ValueError("features must be a multiple of 16 and boundary_width even, got "
                             f"{self.features} and {self.boundary_width}")
        if self.input_size % (2 ** self.hourglass_depth):
            raise ValueError(f"input_size {self.input_size} must be divisible by 2^hourglass_depth")


MSFSR_CONFIGS = {
    "default": MSFSRConfig(),  # upstream: 2.11 M parameters per stage
    # CPU-trainable: F 32, boundary branch 64 channels, one hourglass, one ResNet block
    "lite": MSFSRConfig(features=32, boundary_width=64, boundary_blocks=1, hourglasses=1, upsample_skip=True),
}


# --- upstream building blocks (names as upstream) -----------------------------------------------------


class CALayer(nn.Module):
    """Channel attention of RCAN: global pool -> 1x1 down -> ReLU -> 1x1 up -> sigmoid, as a scale."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(channels, channels // reduction, 1), nn.ReLU(),
                                     nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel-attention block: conv3, ReLU, conv3, CALayer, plus identity."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), CALayer(channels, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SELayer(nn.Module):
    """Squeeze-and-excitation with bias-free Linear layers (upstream's, reduction 8)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(self.avg_pool(x).flatten(1))
        return x * weights[:, :, None, None]


class ResnetBlock(nn.Module):
    """Reflect-padded conv3 (no bias), BN, ReLU, conv3, BN, plus identity (pix2pix's block)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class Residual(nn.Module):
    """Pre-activation bottleneck of the stacked hourglass: BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (+ 1x1 skip)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // 2
        self.convBlock = nn.Sequential(
            nn.BatchNorm2d(c_in), nn.ReLU(), nn.Conv2d(c_in, mid, 1),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, mid, 3, 1, 1),
            nn.BatchNorm2d(mid), nn.ReLU(), nn.Conv2d(mid, c_out, 1))
        self.skipConv = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skipConv is None else self.skipConv(x)
        return skip + self.convBlock(x)


class HourGlassBlock(nn.Module):
    """Recursive hourglass: res{n}_1 (skip), max-pool, res{n}_2, inner level (or res_center), res{n}_3,
    nearest x2 upsampling, sum. Attribute names as upstream (pooling/upsampling hold no parameters)."""

    def __init__(self, channels: int, depth: int):
        super().__init__()
        self.depth = depth
        for n in range(depth, 0, -1):
            setattr(self, f"res{n}_1", Residual(channels, channels))
            setattr(self, f"res{n}_2", Residual(channels, channels))
            setattr(self, f"res{n}_3", Residual(channels, channels))
        self.res_center = Residual(channels, channels)

    def _level(self, x: torch.Tensor, n: int) -> torch.Tensor:
        skip = getattr(self, f"res{n}_1")(x)
        low = getattr(self, f"res{n}_2")(nn.functional.max_pool2d(x, 2, 2))
        low = self._level(low, n - 1) if n > 1 else self.res_center(low)
        low = getattr(self, f"res{n}_3")(low)
        return skip + nn.functional.interpolate(low, scale_factor=2.0, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(x, self.depth)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int = 1, bias: bool = False) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=bias), nn.BatchNorm2d(c_out), nn.ReLU()]


# --- one stage and the whole network --------------------------------------------------------------------


class MSFSRStage(nn.Module):
    """One x2 stage (upstream `Generator`): forward(x) -> (coarse, boundaries, output)."""

    def __init__(self, config: MSFSRConfig):
        super().__init__()
        f, b = config.features, config.boundary_width
        self.upsample_skip = config.upsample_skip
        self.BUM = nn.Sequential(
            *_conv_bn_relu(3, f, 5, bias=True), RCAB(f),
            *_conv_bn_relu(f, f // 2, 3, bias=True), nn.Conv2d(f // 2, 3 * 4, 3, padding=1), nn.PixelShuffle(2))
        self.BFM_head = nn.Sequential(
            *_conv_bn_relu(3, f, 3, stride=2), ResnetBlock(f), SELayer(f),
            nn.ReflectionPad2d(1), nn.Conv2d(f, f, 3, bias=False), nn.Tanh(), SELayer(f))
        self.BEM = nn.Sequential(
            *_conv_bn_relu(3, b // 2, 7, stride=2), Residual(b // 2, b),
            *(ResnetBlock(b) for _ in range(config.boundary_blocks)),
            *(HourGlassBlock(b, config.hourglass_depth) for _ in range(config.hourglasses)),
            *_conv_bn_relu(b, config.num_boundaries, 1, bias=True))
        self.BFM_Tail = nn.Sequential(
            *_conv_bn_relu(f + config.num_boundaries, f, 3), SELayer(f),
            nn.ConvTranspose2d(f, f, 3, 2, 1, output_padding=1, bias=False), nn.BatchNorm2d(f), nn.ReLU(),
            ResnetBlock(f), SELayer(f), nn.ReflectionPad2d(1), nn.Conv2d(f, 3, 3, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        coarse = self.BUM(x)
        if self.upsample_skip:
            base = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            coarse = coarse + base
        boundaries = self.BEM(coarse)
        output = self.BFM_Tail(torch.cat((self.BFM_head(coarse), boundaries), 1))
        if self.upsample_skip:
            output = output + base
        return coarse, boundaries, output


class MSFSR(nn.Module):
    """Three chained stages, 16 -> 128. `forward(lr)` -> list of (coarse, boundaries, output) per stage."""

    supports_landmarks = False

    def __init__(self, config: MSFSRConfig | None = None):
        super().__init__()
        self.config = config or MSFSRConfig()
        self.stages = nn.ModuleList(MSFSRStage(self.config) for _ in range(NUM_STAGES))
        self.apply(_init_weights)

    def forward(self, lr: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        results, x = [], lr
        for stage in self.stages:
            results.append(stage(x))
            x = results[-1][2]
        return results

    def unroll(self, lr: torch.Tensor, steps: int | None = None, last_heatmap: bool = False):
        """The common SR-model interface: ([output of stages 1..steps: 32, 64, 128 px], [their 11 boundary maps
        at each stage's input size, with `last_heatmap`]). MSFSR is not recurrent (each stage has its own
        weights); the list is the per-stage curve that `training.evaluate` reports (smaller outputs bicubic to
        the HR size there); the export keeps the last entries."""
        steps = NUM_STAGES if steps is None else steps
        if not 1 <= steps <= NUM_STAGES:
            raise ValueError(f"MSFSR has stages 1..{NUM_STAGES}, got {steps}")
        outputs, boundary_maps, x = [], [], lr
        for stage in self.stages[:steps]:
            _, boundaries, x = stage(x)
            outputs.append(x)
            boundary_maps.append(boundaries)
        return outputs, boundary_maps if last_heatmap else []


def _init_weights(module: nn.Module) -> None:
    """Upstream `weights_init`: convolutions N(0, 0.02) with zero bias, BatchNorm weight N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def load_official_stages(model: MSFSR, stage_states: list[dict[str, torch.Tensor]]) -> None:
    """Load upstream's three per-stage state dicts (model_stg1/2/3, tensors re-saved from their `model`
    modules) strictly into `model.stages`; a single combined file uses the keys `stages.N.<upstream key>`."""
    from .weights import load_into

    if len(stage_states) != NUM_STAGES:
        raise ValueError(f"MSFSR has {NUM_STAGES} stages, got {len(stage_states)} state dicts")
    for number, (stage, state) in enumerate(zip(model.stages, stage_states), start=1):
        load_into(stage, state, source=f"MSFSR stage {number} weights")
