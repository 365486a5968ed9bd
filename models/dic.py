"""DIC: Deep face super-resolution with Iterative Collaboration (Ma et al., CVPR 2020).

Paper: "Deep Face Super-Resolution with Iterative Collaboration between Attentive Recovery and
Landmark Estimation". Upstream: github.com/Maclory/Deep-Iterative-Collaboration (code/networks).
This is an independent re-implementation. Module names, parameter names and shapes follow the
upstream layout so that official DIC / DICGAN checkpoints load strictly; the code is our own.

Structure (16x16 -> 128x128):
  LR - mean -> conv_in (3x3, 4C) -> PixelShuffle(2) -> C x 32x32 features
  step 0:  first_block(features)                       -> hidden
  step t:  block(features, hidden, attention(heatmap))  -> hidden
  each step: SR_t = bilinear8x(LR) + conv_out(out(hidden));  heatmap, hg_state = HG(SR_t, hg_state)
The recurrent state (hidden, hg_state, heatmap) is passed explicitly: the module keeps no state,
so the loop unrolls cleanly for ONNX export.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigDict

__all__ = ["DICConfig", "DIC", "DIC_CONFIGS", "attention_groups", "merge_heatmaps", "heatmap_peaks"]

# RGB mean of the training faces, subtracted from inputs in [0, 1] (upstream option `rgb_range: 1`).
FACE_RGB_MEAN = (0.509, 0.424, 0.378)

# 68-point (iBUG) landmark groups that drive the 5 attention heads, in head order.
GROUPS_68 = (
    tuple(range(36, 42)),  # left eye
    tuple(range(42, 48)),  # right eye
    tuple(range(27, 36)),  # nose
    tuple(range(48, 68)),  # mouth
    tuple(range(0, 27)),  # jaw contour + brows
)
# Helen 194-point groups (upstream index ranges, end exclusive).
GROUPS_194 = (
    tuple(range(134, 153)) + tuple(range(174, 193)),  # left eye
    tuple(range(114, 133)) + tuple(range(154, 173)),  # right eye
    tuple(range(41, 57)),  # nose
    tuple(range(58, 113)),  # mouth
    tuple(range(0, 40)),  # contour
)
HEATMAP_MAX_FLOOR = 0.05  # heatmaps are normalised by max(peak, floor) before merging


@dataclass(frozen=True)
class DICConfig(ConfigDict):
    """Architecture hyper-parameters (upstream option names)."""

    model_label = "DIC"

    in_channels: int = 3
    out_channels: int = 3
    num_features: int = 48
    num_steps: int = 4
    num_groups: int = 6
    scale: int = 8
    hg_num_feature: int = 256
    hg_num_keypoints: int = 68
    num_fusion_block: int = 7
    detach_attention: bool = False

    def __post_init__(self):
        if self.scale != 8:
            raise ValueError(f"DIC supports scale=8 only (16->128), got scale={self.scale}")
        if self.hg_num_keypoints not in (68, 194):
            raise ValueError(f"hg_num_keypoints must be 68 or 194, got {self.hg_num_keypoints}")
        for name in ("num_features", "num_steps", "num_groups", "hg_num_feature", "num_fusion_block"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.hg_num_feature % 4:
            raise ValueError(f"hg_num_feature must be a multiple of 4, got {self.hg_num_feature}")



DIC_CONFIGS = {
    # The paper's / upstream default: 296 tensors, 21,803,849 parameters.
    "default": DICConfig(),
    # Small configurations for CPU training and tests.
    "small": DICConfig(num_features=24, num_groups=3, hg_num_feature=64, num_fusion_block=2),
    "tiny": DICConfig(num_features=16, num_groups=2, hg_num_feature=32, num_fusion_block=1, num_steps=3),
}


# --- basic blocks (upstream ConvBlock / DeconvBlock are Sequential(conv, act)) --------------------


def _prelu() -> nn.PReLU:
    return nn.PReLU(num_parameters=1, init=0.2)


def _conv_act(c_in: int, c_out: int, k: int, stride: int = 1, padding: int | None = None) -> nn.Sequential:
    padding = (k - 1) // 2 if padding is None else padding
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, padding), _prelu())


def _deconv_act(c_in: int, c_out: int, k: int, stride: int, padding: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(c_in, c_out, k, stride, padding), _prelu())


class _ProjectionGroups(nn.Module):
    """The SRFBN feedback block body: `num_groups` dense up/down projection pairs.

    LR features at 32x32 go up x8 with a 12x12 stride-8 transposed conv and back down with a
    12x12 stride-8 conv; every group sees the concatenation of all previous groups (1x1 `*tran`).
    """

    def __init__(self, num_features: int, num_groups: int, compress_in_channels: int):
        super().__init__()
        nf = num_features
        self.num_groups = num_groups
        self.compress_in = _conv_act(compress_in_channels, nf, 1)
        self.upBlocks = nn.ModuleList(_deconv_act(nf, nf, 12, 8, 2) for _ in range(num_groups))
        self.downBlocks = nn.ModuleList(_conv_act(nf, nf, 12, 8, 2) for _ in range(num_groups))
        self.uptranBlocks = nn.ModuleList(_conv_act(nf * (i + 1), nf, 1) for i in range(1, num_groups))
        self.downtranBlocks = nn.ModuleList(_conv_act(nf * (i + 1), nf, 1) for i in range(1, num_groups))
        self.compress_out = _conv_act(num_groups * nf, nf, 1)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        lr_feats, hr_feats = [x], []
        for idx in range(self.num_groups):
            low = torch.cat(lr_feats, 1)
            if idx > 0:
                low = self.uptranBlocks[idx - 1](low)
            hr_feats.append(self.upBlocks[idx](low))
            high = torch.cat(hr_feats, 1)
            if idx > 0:
                high = self.downtranBlocks[idx - 1](high)
            lr_feats.append(self.downBlocks[idx](high))
        return self.compress_out(torch.cat(lr_feats[1:], 1))


class FirstFeedbackBlock(_ProjectionGroups):
    """Step 0: coarse SR from the LR features alone (upstream `FeedbackBlockCustom`)."""

    def __init__(self, num_features: int, num_groups: int):
        super().__init__(num_features, num_groups, compress_in_channels=num_features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(self.compress_in(features))


class _GroupedResBlock(nn.Module):
    """conv3x3 -> LeakyReLU(0.2) -> conv3x3 plus identity, grouped per attention head."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1, groups=groups),
            nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, 1, 1, groups=groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class FeatureHeatmapFusion(nn.Module):
    """Attentive fusion: one feature branch per facial part, weighted by softmax(part heatmaps)."""

    def __init__(self, num_features: int, num_heads: int, num_blocks: int):
        super().__init__()
        self.num_heads = num_heads
        width = num_features * num_heads
        self.conv_in = nn.Sequential(nn.Conv2d(num_features, width, 1), nn.LeakyReLU(0.2))
        self.resnet = nn.Sequential(*(_GroupedResBlock(width, num_heads) for _ in range(num_blocks)))

    def forward(self, features: torch.Tensor, part_heatmaps: torch.Tensor) -> torch.Tensor:
        branches = self.resnet(self.conv_in(features))
        branches = branches.unflatten(1, (self.num_heads, -1))  # B x heads x C x H x W
        attention = F.softmax(part_heatmaps, dim=1).unsqueeze(2)  # B x heads x 1 x H x W
        return (branches * attention).sum(1)


class AttentiveFeedbackBlock(_ProjectionGroups):
    """Steps >= 1: LR features + previous hidden state, fused with landmark attention."""

    def __init__(self, num_features: int, num_groups: int, num_heads: int, num_fusion_block: int):
        super().__init__(num_features, num_groups, compress_in_channels=2 * num_features)
        self.fusion_block = FeatureHeatmapFusion(num_features, num_heads, num_fusion_block)

    def forward(self, features: torch.Tensor, hidden: torch.Tensor, part_heatmaps: torch.Tensor) -> torch.Tensor:
        x = self.compress_in(torch.cat((features, hidden), 1))
        return self.project(self.fusion_block(x, part_heatmaps))


# --- feedback hourglass landmark estimator (no BatchNorm) -----------------------------------------


class HGResidual(nn.Module):
    """Bottleneck residual: 1x1 -> ReLU -> 3x3 -> 1x1, with a 1x1 skip when widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        mid = c_out // 2
        self.conv_block = nn.Sequential(
            nn.Conv2d(c_in, mid, 1), nn.ReLU(), nn.Conv2d(mid, mid, 3, 1, 1), nn.Conv2d(mid, c_out, 1)
        )
        self.skip_layer = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.skip_layer is None else self.skip_layer(x)
        return skip + self.conv_block(x)


class HGLinear(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(c_in, c_out, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class HourGlass(nn.Module):
    """Recursive hourglass of the given depth. Upstream attribute names: res{n}_{1,2,3}, res_center."""

    def __init__(self, depth: int, channels: int):
        super().__init__()
        self.depth = depth
        for n in range(depth, 0, -1):
            setattr(self, f"res{n}_1", HGResidual(channels, channels))
            setattr(self, f"res{n}_2", HGResidual(channels, channels))
            setattr(self, f"res{n}_3", HGResidual(channels, channels))
        self.res_center = HGResidual(channels, channels)

    def _level(self, x: torch.Tensor, n: int) -> torch.Tensor:
        skip = getattr(self, f"res{n}_1")(x)
        low = getattr(self, f"res{n}_2")(F.max_pool2d(x, 2, 2))
        low = self._level(low, n - 1) if n > 1 else self.res_center(low)
        low = getattr(self, f"res{n}_3")(low)
        return skip + F.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(x, self.depth)


class FeedbackHourGlass(nn.Module):
    """Landmark estimator on the SR image (128x128 -> K heatmaps at 32x32) with a recurrent state.

    The hourglass runs at 2F channels: the first half of its output predicts heatmaps, the second
    half is the state passed to the next step (concatenated with the new image features).
    """

    def __init__(self, num_feature: int, num_keypoints: int):
        super().__init__()
        f = num_feature
        self.num_feature = f
        self.pre_conv_block = nn.Sequential(
            nn.Conv2d(3, f // 4, 7, 2, 3),
            nn.ReLU(),
            HGResidual(f // 4, f // 2),
            nn.MaxPool2d(2, 2),
            HGResidual(f // 2, f // 2),
            HGResidual(f // 2, f),
        )
        self.compress_in = nn.Conv2d(2 * f, 2 * f, 1)
        self.hg = HourGlass(4, 2 * f)
        self.hg_conv_out = nn.Sequential(HGResidual(f, f), HGLinear(f, f), nn.Conv2d(f, num_keypoints, 1))

    def forward(self, image: torch.Tensor, state: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        feature = self.pre_conv_block(image)
        previous = feature if state is None else state
        feature = self.hg(self.compress_in(torch.cat((feature, previous), 1)))
        heatmaps = self.hg_conv_out(feature[:, : self.num_feature])
        return heatmaps, feature[:, self.num_feature :]


# --- heatmap helpers --------------------------------------------------------------------------------


def attention_groups(num_keypoints: int) -> tuple[tuple[int, ...], ...]:
    groups = {68: GROUPS_68, 194: GROUPS_194}.get(num_keypoints)
    if groups is None:
        raise ValueError(f"no attention grouping for {num_keypoints} landmarks (supported: 68, 194)")
    return groups


def merge_heatmaps(heatmaps: torch.Tensor, groups: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """K landmark heatmaps -> one map per part (sum over its points), each map normalised by its peak."""
    peak = heatmaps.amax(dim=(2, 3), keepdim=True).clamp(min=HEATMAP_MAX_FLOOR)
    normalised = heatmaps / peak
    # Sum contiguous index runs with slices: exports as Slice/ReduceSum instead of Gather.
    return torch.stack(
        [sum(normalised[:, start:stop].sum(1) for start, stop in _contiguous_runs(g)) for g in groups], 1
    )


def _contiguous_runs(indices: tuple[int, ...]) -> list[tuple[int, int]]:
    """(3, 4, 5, 9, 10) -> [(3, 6), (9, 11)]"""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def heatmap_peaks(heatmaps: torch.Tensor, stride: float = 4.0) -> torch.Tensor:
    """Arg-max location of each heatmap as (x, y) in output pixels: [N, K, H, W] -> [N, K, 2]."""
    width = heatmaps.shape[-1]
    flat_index = heatmaps.flatten(2).argmax(-1)
    x = flat_index % width
    y = torch.div(flat_index, width, rounding_mode="floor")
    return torch.stack((x, y), -1).to(heatmaps.dtype) * stride


# --- the network ----------------------------------------------------------------------------------


class DIC(nn.Module):
    """DIC generator (also DICGAN's generator: same network, other weights).

    Args:
        config: architecture hyper-parameters; defaults are the paper's.

    `forward(lr)` takes RGB in [0, 1], shape [N, 3, 16, 16], and returns `(sr_steps, heatmap_steps)`:
    one SR image per step (RGB, [0, 1] scale, not clamped, for training) and one heatmap tensor per
    step ([N, K, 32, 32]).
    """

    supports_landmarks = True

    def __init__(self, config: DICConfig | None = None):
        super().__init__()
        cfg = config or DICConfig()
        self.config = cfg
        nf = cfg.num_features
        self.register_buffer("rgb_mean", torch.tensor(FACE_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_in = _conv_act(cfg.in_channels, 4 * nf, 3)
        self.feat_in = nn.PixelShuffle(2)
        self.first_block = FirstFeedbackBlock(nf, cfg.num_groups)
        self.parts = attention_groups(cfg.hg_num_keypoints)
        self.block = AttentiveFeedbackBlock(nf, cfg.num_groups, len(self.parts), cfg.num_fusion_block)
        self.out = _deconv_act(nf, nf, 8, 4, 2)  # 32 -> 128
        self.conv_out = nn.Sequential(nn.Conv2d(nf, cfg.out_channels, 3, 1, 1))
        self.HG = FeedbackHourGlass(cfg.hg_num_feature, cfg.hg_num_keypoints)

    def unroll(
        self, lr: torch.Tensor, steps: int | None = None, last_heatmap: bool = True,
        detach_attention: bool | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run `steps` recurrent steps. With `last_heatmap=False` the final landmark pass is skipped
        (it only feeds a next step), so heatmaps has steps-1 entries. `detach_attention` (default: the
        config's) stops the SR loss's gradient at the attention maps, so it cannot train the hourglass."""
        steps = self.config.num_steps if steps is None else steps
        if detach_attention is None:
            detach_attention = self.config.detach_attention
        if not 1 <= steps <= self.config.num_steps:
            raise ValueError(f"steps must be in 1..{self.config.num_steps}, got {steps}")
        x = lr - self.rgb_mean
        base = F.interpolate(x, scale_factor=8.0, mode="bilinear", align_corners=False)
        features = self.feat_in(self.conv_in(x))
        sr_steps, heatmap_steps = [], []
        hidden = hg_state = heatmaps = None
        for step in range(steps):
            if step == 0:
                hidden = self.first_block(features)
            else:
                parts = merge_heatmaps(heatmaps, self.parts)
                if detach_attention:
                    parts = parts.detach()
                hidden = self.block(features, hidden, parts)
            sr = base + self.conv_out(self.out(hidden))  # mean-subtracted space, as upstream
            sr_steps.append(sr + self.rgb_mean)
            if last_heatmap or step < steps - 1:
                heatmaps, hg_state = self.HG(sr, hg_state)
                heatmap_steps.append(heatmaps)
        return sr_steps, heatmap_steps

    def landmarks(self, heatmaps: torch.Tensor, output_size: int) -> torch.Tensor:
        """(x, y) of each keypoint in output pixels, [N, K, 2], from one step's heatmaps (arg-max)."""
        return heatmap_peaks(heatmaps, stride=output_size / heatmaps.shape[-1])

    def forward(self, lr: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.unroll(lr)
