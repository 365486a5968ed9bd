"""DIC and DICGAN training tasks (SR with landmark estimation, the GAN variant) and the landmark pre-training
task of the hourglass."""
from __future__ import annotations


import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.dic import FACE_RGB_MEAN, DICConfig, FeedbackHourGlass, heatmap_peaks

from ..data import HEATMAP_SIZE, make_heatmaps
from ..discriminators import LightCNNDiscriminator, LightCNNFeatures, gan_loss
from ..metrics import landmark_nme, sharpness_ratio, to_uint8
from .base import Batch, _Task, _validation_batches, _y_psnrs, weighted_heatmap_mse


# Training-only named configs (the weights file stores the full config, so loading needs no name).
# "cpu_demo": "tiny" with 2 steps — measured 1.5 s per batch of 8 (fwd+bwd, 2 threads) vs 2.2-4 s for 3 steps.
EXTRA_DIC_CONFIGS = {
    "cpu_demo": DICConfig(num_features=16, num_groups=2, hg_num_feature=32, num_fusion_block=1, num_steps=2),
}


class DICTask(_Task):
    """DIC / DICGAN generator: sum over steps of L1(SR_t, HR) + w * heatmap loss(heatmap_t, GT).

    The paper's loss is plain MSE with w = 0.1 and sigma = 1. Options that keep a (pre-trained) landmark
    branch alive in joint training: foreground weighting of the heatmap loss, detached attention for the
    first iterations (the SR loss then cannot rewrite the hourglass into an attention generator), a lower
    learning rate for the hourglass, and a validation NME limit on the best checkpoint.
    """

    name = "dic"
    extra_configs = EXTRA_DIC_CONFIGS

    def __init__(self, heatmap_weight: float = 0.1, heatmap_sigma: float = 1.0, heatmap_fg_weight: float = 0.0,
                 detach_attention_iters: int = 0, hg_lr_scale: float = 1.0, max_val_nme: float | None = None):
        super().__init__()
        self.heatmap_weight = heatmap_weight
        self.heatmap_sigma = heatmap_sigma
        self.heatmap_fg_weight = heatmap_fg_weight
        self.detach_attention_iters = detach_attention_iters
        self.hg_lr_scale = hg_lr_scale
        self.max_val_nme = max_val_nme
        self.detach_attention = detach_attention_iters > 0

    @classmethod
    def from_args(cls, args) -> "DICTask":
        return cls(heatmap_weight=args.heatmap_weight, heatmap_sigma=args.heatmap_sigma,
                   heatmap_fg_weight=args.heatmap_fg_weight, detach_attention_iters=args.detach_attention_iters,
                   hg_lr_scale=args.hg_lr_scale, max_val_nme=args.max_val_nme)

    def set_iteration(self, iteration: int, total: int) -> None:
        self.detach_attention = iteration < self.detach_attention_iters

    def status(self) -> str:
        return "attention detached" if self.detach_attention else ""

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        if self.hg_lr_scale == 1.0:
            return super().param_groups(model, lr)
        hourglass = list(model.HG.parameters())
        hg_ids = {id(p) for p in hourglass}
        rest = [p for p in model.parameters() if id(p) not in hg_ids]
        return [{"params": rest, "lr": lr}, {"params": hourglass, "lr": lr * self.hg_lr_scale}]

    def reconstruction(self, model: nn.Module, batch: Batch) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """-> (SR per step, summed L1 over steps, summed heatmap loss over steps)."""
        sr_steps, heatmap_steps = model.unroll(batch.lr, detach_attention=self.detach_attention)
        target = make_heatmaps(batch.landmarks, HEATMAP_SIZE, 4.0, self.heatmap_sigma)
        l1 = sum(F.l1_loss(sr.float(), batch.hr.float()) for sr in sr_steps)
        hm = sum(weighted_heatmap_mse(h, target, self.heatmap_fg_weight) for h in heatmap_steps)
        return sr_steps, l1, hm

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        _, l1, hm = self.reconstruction(model, batch)
        total = l1 + self.heatmap_weight * hm
        return total, {"l1": float(l1.detach()), "heatmap": float(hm.detach())}

    @torch.no_grad()
    def predict(self, model: nn.Module, lr: torch.Tensor, steps: int | None = None):
        """-> (sr_steps, heatmap_steps) for evaluation (all steps up to `steps`)."""
        return model.unroll(lr, steps=steps, last_heatmap=True)

    @torch.no_grad()
    def validate(self, model: nn.Module, split, device, batch_size: int = 25) -> dict:
        """Y-PSNR of the last step and NME of the last step's heatmaps (landmarks found on its SR image)."""
        was_training = model.training
        model.eval()
        scores, nmes, sharpness = [], [], []
        for idx, batch in _validation_batches(split, device, batch_size):
            sr_steps, heatmap_steps = self.predict(model, batch.lr)
            sr = to_uint8(sr_steps[-1])
            scores.extend(_y_psnrs(sr, split, idx))
            sharpness.extend(sharpness_ratio(sr[i], split.hr[k]) for i, k in enumerate(idx))
            nmes.extend(landmark_nme(heatmap_peaks(heatmap_steps[-1].float()).cpu().numpy(), split.landmarks[idx]))
        model.train(was_training)
        return {"psnr": float(np.mean(scores)), "nme": float(np.mean(nmes)), "sharpness": float(np.mean(sharpness))}

    def score(self, metrics: dict) -> float | None:
        if self.max_val_nme is not None and metrics["nme"] > self.max_val_nme:
            return None
        return metrics["psnr"]


class DICGANTask(DICTask):
    """DICGAN: the DIC generator fine-tuned adversarially (upstream `train_DICGAN_CelebA.json` weights):
    L1 (1) + heatmap (0.1) + LightCNN feature L1 (0.1, only with `feature_weights`) + vanilla GAN (0.005) on
    the last step, against a LightCNN discriminator trained from scratch (Adam 1e-4, one D step per G step,
    D first). Start it from trained DIC weights (`--init-weights`). The best checkpoint is the one whose
    sharpness (SR/HR gradient magnitude) is closest to 1 among those that keep PSNR >= `min_val_psnr`.
    """

    name = "dicgan"

    def __init__(self, gan_weight: float = 0.005, feature_weight: float = 0.1, feature_weights: str | None = None,
                 d_lr: float = 1e-4, min_val_psnr: float | None = None, **dic_options):
        super().__init__(**dic_options)
        self.gan_weight, self.feature_weight, self.d_lr = gan_weight, feature_weight, d_lr
        self.feature_weights, self.min_val_psnr = feature_weights, min_val_psnr
        self.discriminator = LightCNNDiscriminator()
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=d_lr)
        self.features = self._load_features(feature_weights)

    @classmethod
    def from_args(cls, args) -> "DICGANTask":
        base = DICTask.from_args(args)
        return cls(gan_weight=args.gan_weight, feature_weight=args.feature_weight,
                   feature_weights=args.feature_weights, d_lr=args.d_lr, min_val_psnr=args.min_val_psnr,
                   heatmap_weight=base.heatmap_weight, heatmap_sigma=base.heatmap_sigma,
                   heatmap_fg_weight=base.heatmap_fg_weight, detach_attention_iters=base.detach_attention_iters,
                   hg_lr_scale=base.hg_lr_scale, max_val_nme=base.max_val_nme)

    @staticmethod
    def _load_features(path: str | None) -> LightCNNFeatures | None:
        """The pretrained LightCNN face features (upstream LightCNN_feature.pth), or None: no feature loss."""
        if path is None:
            return None
        from models.weights import load_into, read_state_dict

        features = LightCNNFeatures()
        load_into(features, read_state_dict(path), source=f"LightCNN feature weights {path}")
        return features.eval()

    def _discriminator_step(self, sr: torch.Tensor, hr: torch.Tensor) -> float:
        self.discriminator.to(hr.device).train()
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss = gan_loss(self.discriminator(hr), True) + gan_loss(self.discriminator(sr.detach()), False)
        d_loss.backward()
        self.d_optimizer.step()
        return float(d_loss.detach())

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        sr_steps, l1, hm = self.reconstruction(model, batch)
        sr, hr = sr_steps[-1].float(), batch.hr.float()
        d_loss = self._discriminator_step(sr, hr)
        self.discriminator.requires_grad_(False)  # the generator's adversarial term must not train D
        adversarial = gan_loss(self.discriminator(sr), True)
        self.discriminator.requires_grad_(True)
        total = l1 + self.heatmap_weight * hm + self.gan_weight * adversarial
        parts = {"l1": float(l1.detach()), "heatmap": float(hm.detach()), "g_gan": float(adversarial.detach()),
                 "d": d_loss}
        if self.features is not None:
            self.features.to(hr.device)
            feature = F.l1_loss(self.features(sr), self.features(hr))
            total = total + self.feature_weight * feature
            parts["feature"] = float(feature.detach())
        return total, parts

    def score(self, metrics: dict) -> float | None:
        if DICTask.score(self, metrics) is None:
            return None
        if self.min_val_psnr is not None and metrics["psnr"] < self.min_val_psnr:
            return None
        return -abs(1.0 - metrics["sharpness"])

    def state_dict(self) -> dict:
        return {"discriminator": {k: v.detach().cpu() for k, v in self.discriminator.state_dict().items()},
                "d_optimizer": self.d_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])


class DICLandmarkTask(_Task):
    """Pre-training of DIC's landmark branch alone (`--task landmarks`): the feedback hourglass on face images.

    Upstream starts DIC from a pretrained face-alignment hourglass; this trains one on the shared faces.
    Input: per face, the HR image or the bilinear x8 of its LR (half each by default), so the branch sees
    both sharp faces and faces as blurry as DIC's first SR step; in the mean-subtracted space DIC feeds it.
    Loss: foreground-weighted MSE against Gaussians (sigma in 32x32-grid cells) over `passes` feedback passes.
    The weights file holds the hourglass alone (raw keys, as the upstream FB_HG_68_CelebA.pth) and is
    loaded into a DIC run with `--landmark-weights`.
    """

    name = "dic"
    extra_configs = EXTRA_DIC_CONFIGS

    def __init__(self, sigma: float = 1.5, foreground_weight: float = 10.0, passes: int = 2, hr_share: float = 0.5):
        super().__init__()
        self.sigma, self.foreground_weight, self.passes, self.hr_share = sigma, foreground_weight, passes, hr_share
        self.rgb_mean = torch.tensor(FACE_RGB_MEAN).view(1, 3, 1, 1)

    @classmethod
    def from_args(cls, args) -> "DICLandmarkTask":
        return cls(sigma=args.heatmap_sigma, foreground_weight=args.heatmap_fg_weight)

    def build_model(self, config) -> nn.Module:
        return FeedbackHourGlass(config.hg_num_feature, config.hg_num_keypoints).train()

    def images(self, batch: Batch, hr_share: float) -> torch.Tensor:
        """What the hourglass sees: HR (with probability hr_share) or bilinear x8 of the LR, minus the mean."""
        blurry = F.interpolate(batch.lr, size=batch.hr.shape[-1], mode="bilinear", align_corners=False)
        use_hr = (torch.rand(len(batch), 1, 1, 1) < hr_share).to(batch.hr.device)
        return torch.where(use_hr, batch.hr, blurry) - self.rgb_mean.to(batch.hr.device)

    def run_passes(self, model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
        heatmaps, state = [], None
        for _ in range(self.passes):
            h, state = model(images, state)
            heatmaps.append(h)
        return heatmaps

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        target = make_heatmaps(batch.landmarks, HEATMAP_SIZE, 4.0, self.sigma)
        heatmaps = self.run_passes(model, self.images(batch, self.hr_share))
        total = sum(weighted_heatmap_mse(h, target, self.foreground_weight) for h in heatmaps)
        return total, {"heatmap": float(total.detach())}

    @torch.no_grad()
    def validate(self, model: nn.Module, split, device, batch_size: int = 25) -> dict:
        """NME of the last pass on the blurry (bilinear x8 LR) and on the sharp (HR) val faces."""
        was_training = model.training
        model.eval()
        nmes = {"nme_lr": [], "nme_hr": []}
        for idx, batch in _validation_batches(split, device, batch_size):
            for key, hr_share in (("nme_lr", 0.0), ("nme_hr", 1.0)):
                heatmaps = self.run_passes(model, self.images(batch, hr_share))[-1]
                nmes[key].extend(landmark_nme(heatmap_peaks(heatmaps.float()).cpu().numpy(), split.landmarks[idx]))
        model.train(was_training)
        return {key: float(np.mean(values)) for key, values in nmes.items()}

    def score(self, metrics: dict) -> float | None:
        return -metrics["nme_lr"]  # the blurry input is the harder one and closer to DIC's first SR step
