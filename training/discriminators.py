"""Networks used only while training: DICGAN's discriminator and its optional face-feature extractor.

Upstream DICGAN (Maclory/Deep-Iterative-Collaboration, `train_DICGAN_CelebA.json`) uses the 9-layer
LightCNN (Wu et al., "A Light CNN for Deep Face Representation with Noisy Labels") twice:
  * as the discriminator, trained from scratch: `features` (max-feature-map convolutions, 128 -> 8 px)
    + `classifier` (mfm Linear 8*8*128 -> 256, LeakyReLU 0.2, Linear 256 -> 1), one logit per image;
  * as a frozen feature extractor for the "feature" loss, from the pretrained `LightCNN_feature.pth`
    (a face-recognition network; not reachable here, so that term is off unless the user has the file).
Parameter names follow the upstream modules (`features.N.filter`, `features.N.conv_a.filter`, ...), so
upstream discriminator / LightCNN feature weights load strictly.
"""
from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["LightCNNDiscriminator", "LightCNNFeatures", "gan_loss"]


class MaxFeatureMap(nn.Module):
    """Conv (or Linear) to 2C channels, then the element-wise max of the two halves (LightCNN's `mfm`)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 linear: bool = False):
        super().__init__()
        self.out_channels = c_out
        self.filter = nn.Linear(c_in, 2 * c_out) if linear else nn.Conv2d(c_in, 2 * c_out, kernel_size, stride,
                                                                         padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.filter(x), self.out_channels, 1)
        return torch.max(a, b)


class MFMGroup(nn.Module):
    """1x1 mfm at the input width, then a k x k mfm to the output width (upstream `group`)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv_a = MaxFeatureMap(c_in, c_in, 1, 1, 0)
        self.conv = MaxFeatureMap(c_in, c_out, kernel_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.conv_a(x))


def _pool() -> nn.MaxPool2d:
    return nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)


def _lightcnn_features() -> nn.Sequential:
    """128x128 RGB -> 128 x 8 x 8 (indices as upstream: 0 mfm, 1 pool, 2 group, 3 pool, 4 group, 5 pool, 6-7 groups, 8 pool)."""
    return nn.Sequential(
        MaxFeatureMap(3, 48, 5, 1, 2), _pool(),
        MFMGroup(48, 96), _pool(),
        MFMGroup(96, 192), _pool(),
        MFMGroup(192, 128), MFMGroup(128, 128), _pool(),
    )


class LightCNNDiscriminator(nn.Module):
    """Upstream `network_9layers`: one real/fake logit per 128x128 image in [0, 1]."""

    def __init__(self):
        super().__init__()
        self.features = _lightcnn_features()
        self.classifier = nn.Sequential(MaxFeatureMap(8 * 8 * 128, 256, linear=True), nn.LeakyReLU(0.2),
                                        nn.Linear(256, 1))
        for module in self.modules():  # upstream "normal" init for D: N(0, 0.02)
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(module.weight, 0.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (128, 128):
            raise ValueError(f"the LightCNN discriminator takes 128x128 images, got {tuple(images.shape[-2:])}")
        return self.classifier(self.features(images).flatten(1))


class LightCNNFeatures(nn.Module):
    """Frozen LightCNN features (upstream `LightCNNFeatureExtractor`) for the feature loss."""

    def __init__(self):
        super().__init__()
        self.features = _lightcnn_features()
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)


def gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """The vanilla GAN loss (binary cross-entropy on logits) against an all-real or all-fake target."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return nn.functional.binary_cross_entropy_with_logits(logits, target)
