"""Panini-Net: GAN-prior face restoration with degradation-aware feature interpolation (Wang et al., AAAI 2022).

Paper: "Panini-Net: GAN Prior Based Degradation-Aware Feature Interpolation for Face Restoration".
Upstream: github.com/jianzhangcs/panini (MMEditing), `mmedit/models/backbones/panini.py` (`Panini_SR`,
`Panini_MFR`) on MMEditing's `StyleGANv2Generator`. This is an independent re-implementation; module names,
parameter names and shapes follow upstream so that its checkpoints load strictly (`generator.*`,
`encoder.*`, `AFS_maskGen.*`, `fusion_out.*`, `choice_vector` / `deg_encoder.*`; equalized-lr weights are
stored as `weight_orig`, blur kernels and the fixed noise maps as buffers).

    lr (in_size px) -> encoder[0]: RRDB trunk, CBAM, conv            -> features at min(in_size, 64) px
                    -> encoder[1..]: stride-2 convs down to 4 px     -> features at every size down to 4 px
                    -> encoder[-1]: conv, flatten, Linear            -> W+ code [num_latents, style_channels]
    degradation code (SR: a learned `choice_vector`; MFR: a MoCo-style `deg_encoder` on the input)
                    -> AFS_maskGen: MLP -> per level, per channel softmax pair (m1, m2)
    StyleGAN2 synthesis from its constant 4x4 input, driven by the W+ code (the mapping MLP is not used):
        before each block whose input is <= 64 px (DAFI):  out = m1 * out + m2 * fusion_out(encoder features)
        modulated conv (x2 up), modulated conv, toRGB skip                -> RGB at out_size px

Modulated convolutions run in the non-fused form, conv(x * s, W) * d with d = rsqrt(s^2 . sum W^2 + eps)
(StyleGAN2's `fused_modconv=False`). Upstream folds the batch into the groups of one convolution; ONNX's
`Conv.group` is a static attribute, so that form cannot export with a dynamic batch. Both give the same
numbers (tested); the weights keep the upstream [1, out, in, k, k] layout.

Images are RGB in [0, 1] in and out here; upstream normalises to [-1, 1] (mean 0.5, std 0.5) and this module
converts inside, so upstream weights work unchanged. The fixed `injected_noise_*` buffers are always used
(upstream passes them explicitly too), so a forward pass is deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ConfigDict

__all__ = ["PaniniConfig", "Panini", "PANINI_CONFIGS", "StyleGAN2Generator", "ModulatedConv2d",
           "load_official_panini"]

DAFI_MAX_SIZE = 64  # upstream fuses encoder features into generator blocks of at most 64 px
BLUR_KERNEL = (1, 3, 3, 1)


@dataclass(frozen=True)
class PaniniConfig(ConfigDict):
    """Sizes of a Panini network. The defaults are upstream `Panini_SR` (64 -> 1024).

    `variant`: "sr" (a learned degradation `choice_vector`) or "mfr" (a degradation encoder on the input,
    upstream `Panini_MFR`, only for in_size 512). Generator channels at r px: min(max_channels,
    16 * channel_multiplier * 1024 / r), which is upstream's table for max_channels 512, multiplier 2.
    """

    model_label = "Panini"

    in_size: int = 64
    out_size: int = 1024
    variant: str = "sr"
    style_channels: int = 512
    num_mlps: int = 8  # StyleGAN2 mapping layers: loaded with the prior, unused by Panini's forward
    max_channels: int = 512
    channel_multiplier: float = 2.0
    rrdb_channels: int = 64
    num_rrdbs: int = 23
    growth_channels: int = 32
    cbam_reduction: int = 8
    latent_conv_channels: int = 256  # the conv before the Linear that makes the W+ code
    degradation_channels: int = 256

    def __post_init__(self):
        if self.variant not in ("sr", "mfr"):
            raise ValueError(f"variant must be 'sr' or 'mfr', got {self.variant!r}")
        for name in ("in_size", "out_size"):
            size = getattr(self, name)
            if size < 4 or size & (size - 1):
                raise ValueError(f"{name} must be a power of two >= 4, got {size}")
        if self.in_size >= self.out_size:
            raise ValueError(f"in_size must be smaller than out_size, got {self.in_size} and {self.out_size}")
        if self.variant == "mfr" and self.in_size != 512:
            raise ValueError("variant 'mfr' is upstream Panini_MFR, whose encoder is written for in_size 512")
        if self.variant == "sr" and self.in_size > DAFI_MAX_SIZE:
            raise ValueError(f"variant 'sr' takes inputs of at most {DAFI_MAX_SIZE} px, got {self.in_size}")
        widths = {self.channels(size) for size in self.fusion_sizes}
        if len(widths) != 1:  # upstream's mask generator assumes one width for every fused level
            raise ValueError(f"the generator must have one width at every fused size {self.fusion_sizes}, "
                             f"got {sorted(widths)}; raise max_channels' share or lower the input size")

    def channels(self, size: int) -> int:
        return min(self.max_channels, int(16 * self.channel_multiplier * 1024 // size))

    @property
    def scale(self) -> int:
        return self.out_size // self.in_size

    @property
    def num_latents(self) -> int:
        return 2 * int(math.log2(self.out_size)) - 2

    @property
    def fusion_sizes(self) -> tuple[int, ...]:
        """Generator block sizes that get encoder features, smallest first (4, 8, ... <= 64 and <= in_size)."""
        top = min(self.in_size, DAFI_MAX_SIZE)
        return tuple(2 ** k for k in range(2, int(math.log2(top)) + 1))


PANINI_CONFIGS = {
    "default": PaniniConfig(),  # upstream Panini_SR, 64 -> 1024
    # upstream Panini_MFR: 512 -> 1024; its RRDB trunk is 8 channels x 2 blocks (the constructor defaults)
    "mfr": PaniniConfig(in_size=512, variant="mfr", rrdb_channels=8, num_rrdbs=2, cbam_reduction=2),
    # CPU-trainable Panini-shaped 16 -> 128 network (no pretrained prior: a PSNR network of this shape)
    "lite": PaniniConfig(in_size=16, out_size=128, style_channels=128, num_mlps=0, max_channels=128,
                         channel_multiplier=0.25, rrdb_channels=32, num_rrdbs=2, growth_channels=16,
                         cbam_reduction=4, latent_conv_channels=64, degradation_channels=64),
}


# ---------------------------------------------------------------- StyleGAN2 pieces (MMEditing layout)

def _blur_kernel(scale: float = 1.0) -> torch.Tensor:
    k = torch.tensor(BLUR_KERNEL, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum() * scale


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Zero-stuff by `up`, pad (before, after) on both axes, then filter with `kernel` (per channel).
    Standard ops only (MMCV's CUDA op of the same name; down=1 is all StyleGAN2's generator uses)."""
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), (0, up - 1, 0, 0, 0, up - 1)).reshape(n, c, h * up, w * up)
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    weight = torch.flip(kernel, (0, 1)).to(x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


class Blur(nn.Module):
    def __init__(self, pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.register_buffer("kernel", _blur_kernel(upsample_factor ** 2))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class UpsampleUpFIRDn(nn.Module):
    """x2 upsampling of the RGB skip: zero-stuff, blur (kernel x4)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", _blur_kernel(4.0))
        p = len(BLUR_KERNEL) - 2
        self.pad = ((p + 1) // 2 + 1, p // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=2, pad=self.pad)


class EqualizedLinear(nn.Module):
    """nn.Linear without bias whose weight is stored as `weight_orig` and scaled by lr_mul / sqrt(fan_in)."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0):
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.scale = lr_mul / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_orig * self.scale)


class EqualLinearActModule(nn.Module):
    """Equalized linear + bias (scaled by lr_mul), optionally with StyleGAN2's scaled leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 1.0, bias_init: float = 0.0,
                 activate: bool = False):
        super().__init__()
        self.linear = EqualizedLinear(in_features, out_features, lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.reshape(x.shape[0], -1)) + self.bias * self.lr_mul
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.activate else x


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x.norm(dim=1, keepdim=True) / math.sqrt(x.shape[1]) + 1e-6)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated conv, non-fused (exportable with a dynamic batch).

    weight_orig: [1, out, in, k, k] (upstream layout), scaled by 1 / sqrt(in * k * k) at run time.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, style_channels: int, demodulate: bool = True,
                 upsample: bool = False, eps: float = 1e-8):
        super().__init__()
        self.style_modulation = EqualLinearActModule(style_channels, c_in, bias_init=1.0)
        self.weight_orig = nn.Parameter(torch.randn(1, c_out, c_in, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(c_in * kernel_size ** 2)
        self.demodulate, self.upsample, self.eps = demodulate, upsample, eps
        self.padding = kernel_size // 2
        if upsample:
            p = (len(BLUR_KERNEL) - 2) - (kernel_size - 1)
            self.blur = Blur(((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        s = self.style_modulation(style)  # [n, in]
        weight = self.weight_orig[0] * self.scale  # [out, in, k, k]
        x = x * s[:, :, None, None]
        if self.upsample:
            x = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2))
        else:
            x = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:  # rsqrt of sum over (in, k, k) of (W * s)^2, per sample and output channel
            demod = torch.rsqrt((s * s) @ weight.pow(2).sum((2, 3)).t() + self.eps)  # [n, out]
            x = x * demod[:, :, None, None]
        return x


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return x + self.weight * noise


class FusedBiasLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class ModulatedStyleConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, style_channels: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, style_channels, upsample=upsample)
        self.noise_injector = NoiseInjection()
        self.activate = FusedBiasLeakyReLU(c_out)

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise_injector(self.conv(x, style), noise))


class ModulatedToRGB(nn.Module):
    def __init__(self, c_in: int, style_channels: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = UpsampleUpFIRDn()
        self.conv = ModulatedConv2d(c_in, 3, 1, style_channels, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_like: torch.Tensor) -> torch.Tensor:
        return self.input.expand(batch_like.shape[0], -1, -1, -1)


class StyleGAN2Generator(nn.Module):
    """MMEditing's `StyleGANv2Generator` parameter layout; Panini drives its blocks directly (see Panini)."""

    def __init__(self, config: PaniniConfig):
        super().__init__()
        sc = config.style_channels
        self.style_mapping = nn.Sequential(PixelNorm(), *(
            EqualLinearActModule(sc, sc, lr_mul=0.01, activate=True) for _ in range(config.num_mlps)))
        self.constant_input = ConstantInput(config.channels(4))
        self.conv1 = ModulatedStyleConv(config.channels(4), config.channels(4), sc)
        self.to_rgb1 = ModulatedToRGB(config.channels(4), sc, upsample=False)
        self.convs, self.to_rgbs = nn.ModuleList(), nn.ModuleList()
        c_in = config.channels(4)
        for log_size in range(3, int(math.log2(config.out_size)) + 1):
            c_out = config.channels(2 ** log_size)
            self.convs.append(ModulatedStyleConv(c_in, c_out, sc, upsample=True))
            self.convs.append(ModulatedStyleConv(c_out, c_out, sc))
            self.to_rgbs.append(ModulatedToRGB(c_out, sc))
            c_in = c_out
        self.num_injected_noises = config.num_latents - 1
        for index in range(self.num_injected_noises):
            size = 2 ** ((index + 5) // 2)
            self.register_buffer(f"injected_noise_{index}", torch.randn(1, 1, size, size))

    def noises(self) -> list[torch.Tensor]:
        return [getattr(self, f"injected_noise_{i}") for i in range(self.num_injected_noises)]


# ---------------------------------------------------------------- Panini encoder pieces

class ResidualDenseBlock(nn.Module):
    def __init__(self, channels: int, growth: int):
        super().__init__()
        for i in range(5):
            self.add_module(f"conv{i + 1}", nn.Conv2d(channels + i * growth, channels if i == 4 else growth, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(1, 5):
            features.append(F.leaky_relu(getattr(self, f"conv{i}")(torch.cat(features, 1)), 0.2))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (ResidualDenseBlock(channels, growth) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBFeatureExtractor(nn.Module):
    def __init__(self, channels: int, num_blocks: int, growth: int):
        super().__init__()
        self.conv_first = nn.Conv2d(3, channels, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(channels, growth) for _ in range(num_blocks)))
        self.conv_body = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        return feat + self.conv_body(self.body(feat))


class BasicConv(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-5, momentum 0.01), CBAM's spatial gate."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5, momentum=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class ChannelGate(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True))
        return x * torch.sigmoid(logits)[:, :, None, None]


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = BasicConv(2, 1, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat((x.amax(1, keepdim=True), x.mean(1, keepdim=True)), 1)
        return x * torch.sigmoid(self.spatial(pooled))


class CBAM(nn.Module):
    """Upstream's CBAM variant: one shared 3x3 `fea_preprocess` conv applied before each of the two gates."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fea_preprocess = nn.Conv2d(channels, channels, 3, 1, 1)
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ChannelGate(self.fea_preprocess(x))
        return self.SpatialGate(self.fea_preprocess(x))


def _conv_lrelu(c_in: int, c_out: int, stride: int = 1, slope: float = 0.2) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.LeakyReLU(slope, inplace=True)]


class DegradationEncoder(nn.Module):
    """Upstream `Encoder` (MFR's degradation encoder, MoCo-pretrained): 6 conv/BN/LeakyReLU, global pool.
    Its `mlp` (MoCo's projection head) is part of the checkpoint but not of the forward pass."""

    def __init__(self, channels: int = 256):
        super().__init__()
        layers, c_in = [], 3
        for c_out, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (channels, 2), (channels, 1)):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1, True)]
            c_in = c_out
        self.E = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(channels, channels), nn.LeakyReLU(0.1, True),
                                 nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.E(x).flatten(1)


class AdaptiveFeatureSelectMaskGen(nn.Module):
    """Degradation code -> per fused level, per channel softmax weights (m1 for the generator, m2 for the
    encoder features)."""

    def __init__(self, levels: int, channels: int, code_channels: int):
        super().__init__()
        self.levels, self.channels = levels, channels
        self.mapping = nn.Sequential(nn.Linear(code_channels, code_channels), nn.LeakyReLU(0.1, True),
                                     nn.Linear(code_channels, levels * 2 * channels))

    def forward(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = torch.softmax(self.mapping(code).reshape(-1, self.levels, 2, self.channels), dim=2)
        return mask[:, :, 0], mask[:, :, 1]  # each [n, levels, channels]


# ---------------------------------------------------------------- the network

class Panini(nn.Module):
    """Panini_SR / Panini_MFR. forward(lr in [0, 1], [n, 3, in, in]) -> SR in [0, 1], [n, 3, out, out]."""

    supports_landmarks = False

    def __init__(self, config: PaniniConfig | None = None):
        super().__init__()
        self.config = config = config or PaniniConfig()
        self.generator = StyleGAN2Generator(config)
        if config.variant == "sr":
            self.choice_vector = nn.Parameter(torch.randn(1, config.degradation_channels))
        else:
            self.resize = nn.AdaptiveAvgPool2d((256, 256))
            self.deg_encoder = DegradationEncoder(config.degradation_channels)
        self.encoder = self._build_encoder(config)
        fused = config.fusion_sizes
        width = config.channels(fused[0])
        self.AFS_maskGen = AdaptiveFeatureSelectMaskGen(len(fused), width, config.degradation_channels)
        self.fusion_out = nn.ModuleList(nn.Conv2d(width, width, 3, 1, 1) for _ in fused)

    @staticmethod
    def _build_encoder(config: PaniniConfig) -> nn.ModuleList:
        top = config.fusion_sizes[-1]
        trunk = [RRDBFeatureExtractor(config.rrdb_channels, config.num_rrdbs, config.growth_channels),
                 CBAM(config.rrdb_channels, config.cbam_reduction)]
        if config.variant == "mfr":  # upstream: 512 -> 64 px through 32, 64, 128, 512 channels
            trunk += [*_conv_lrelu(config.rrdb_channels, 32), *_conv_lrelu(32, 64, 2), *_conv_lrelu(64, 128, 2),
                      *_conv_lrelu(128, config.channels(top), 2)]
        else:
            trunk += _conv_lrelu(config.rrdb_channels, config.channels(top))
        encoder = nn.ModuleList([nn.Sequential(*trunk)])
        for size in reversed(config.fusion_sizes[:-1]):
            encoder.append(nn.Sequential(*_conv_lrelu(config.channels(size * 2), config.channels(size), 2)))
        encoder.append(nn.Sequential(
            *_conv_lrelu(config.channels(4), config.latent_conv_channels), nn.Flatten(),
            nn.Linear(16 * config.latent_conv_channels, config.num_latents * config.style_channels)))
        return encoder

    def degradation_code(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.variant == "sr":
            return self.choice_vector.expand(x.shape[0], -1)
        return self.deg_encoder(self.resize(x))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        size = self.config.in_size
        if lr.shape[-2:] != (size, size):
            raise ValueError(f"Panini expects {size}x{size} inputs, got {tuple(lr.shape[-2:])}")
        x = lr * 2 - 1
        m1, m2 = self.AFS_maskGen(self.degradation_code(x))
        features = []
        for block in self.encoder:
            x = block(x)
            features.append(x)
        latent = features[-1].reshape(lr.shape[0], -1, self.config.style_channels)
        encoder_maps = features[-2::-1]  # 4 px first
        return (self._synthesise(latent, encoder_maps, m1, m2) + 1) / 2

    def _synthesise(self, latent, encoder_maps, m1, m2) -> torch.Tensor:
        g = self.generator
        noise = g.noises()
        out = g.conv1(g.constant_input(latent), latent[:, 0], noise[0])
        skip = g.to_rgb1(out, latent[:, 1])
        index = 1
        for level, (up_conv, conv, to_rgb) in enumerate(zip(g.convs[::2], g.convs[1::2], g.to_rgbs)):
            if level < len(self.fusion_out):  # DAFI: blend the encoder's features into the block input
                feat = self.fusion_out[level](encoder_maps[level])
                out = m1[:, level, :, None, None] * out + m2[:, level, :, None, None] * feat
            out = up_conv(out, latent[:, index], noise[index])
            out = conv(out, latent[:, index + 1], noise[index + 1])
            skip = to_rgb(out, latent[:, index + 2], skip)
            index += 2
        return skip

    def unroll(self, lr: torch.Tensor, steps: int | None = None, last_heatmap: bool = False):
        """The common SR-model interface: ([SR], no heatmaps). Panini is not recurrent."""
        if steps not in (None, 1) or last_heatmap:
            raise ValueError("Panini is not recurrent and has no landmark output")
        return [self(lr)], []


def load_official_panini(model: Panini, state: dict[str, torch.Tensor]) -> None:
    """Strictly load an upstream Panini checkpoint: MMEditing saves the restorer, so generator keys carry a
    `generator.` prefix there (and the discriminator's keys sit beside them); both are handled."""
    from .weights import load_into

    ours = model.state_dict()
    if not set(ours) <= set(state) and any(k.startswith("generator.generator.") for k in state):
        state = {k[len("generator."):]: v for k, v in state.items() if k.startswith("generator.")}
    load_into(model, state, source="Panini weights")
