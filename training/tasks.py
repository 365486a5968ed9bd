"""Training tasks: what a model-specific part of training needs, so the loop in `train.py` stays generic.

A task knows how to build its model from a config, turn a batch of uint8 arrays into tensors, compute
the loss, and produce the SR image used for validation. Every task also has
`set_iteration(iteration, total)` (a schedule hook, e.g. PFSR's progressive steps) and
`final_model_ready` (whether validation scores may select the best checkpoint yet).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import create_model, model_spec
from models.dic import FACE_RGB_MEAN, DICConfig, FeedbackHourGlass, heatmap_peaks
from models.pfsr import NUM_STAGES
from runtime.frames import hwc_uint8_to_nchw

from .data import HEATMAP_SIZE, HR_SIZE, flip_landmarks, make_heatmaps
from .discriminators import LightCNNDiscriminator, LightCNNFeatures, gan_loss
from .metrics import CROP_BORDER, landmark_nme, psnr, rgb_to_y, sharpness_ratio, to_uint8

# Training-only named configs (the weights file stores the full config, so loading needs no name).
# "cpu_demo": "tiny" with 2 steps — measured 1.5 s per batch of 8 (fwd+bwd, 2 threads) vs 2.2-4 s for 3 steps.
EXTRA_DIC_CONFIGS = {
    "cpu_demo": DICConfig(num_features=16, num_groups=2, hg_num_feature=32, num_fusion_block=1, num_steps=2),
}

log = logging.getLogger(__name__)
__all__ = ["EXTRA_DIC_CONFIGS", "Batch", "DICTask", "DICGANTask", "DICLandmarkTask", "MSFSRTask", "PFSRTask", "ProgressiveSchedule", "TASKS",
           "get_task", "sample_batch", "attention_map", "weighted_heatmap_mse"]


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
                 pin_memory: bool = False, channels_last: bool = False, augment=None,
                 rng: np.random.Generator | None = None) -> Batch:
    """Gather a batch from a decoded split; `flips` (bool per sample) mirrors images + landmarks; `augment`
    (e.g. `training.augment.RealFraming`) then re-makes the pairs with `rng`."""
    hr = split.hr[indices]
    lr = split.lr[indices]
    landmarks = split.landmarks[indices].copy()
    if flips is not None and flips.any():
        hr = hr.copy()
        lr = lr.copy()
        hr[flips] = hr[flips][:, :, ::-1]
        lr[flips] = lr[flips][:, :, ::-1]
        landmarks[flips] = flip_landmarks(landmarks[flips], HR_SIZE)
    if augment is not None:
        hr, lr, landmarks = augment(hr, lr, landmarks, rng)
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
    augment = None  # a training-pair transform (`--real-framing`), validation stays clean

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

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        """Optimizer parameter groups (one group at `lr` unless a task trains parts at other rates)."""
        return [{"params": list(model.parameters()), "lr": lr}]

    @torch.no_grad()
    def validate(self, model: nn.Module, split, device, batch_size: int = 25) -> dict:
        """Validation metrics: mean Y-PSNR (official DIC metric) of the last step."""
        return {"psnr": _mean_y_psnr(self, model, split, device, batch_size)}

    def score(self, metrics: dict) -> float | None:
        """Higher is better; None when this model may not be selected as the best checkpoint."""
        return metrics["psnr"]

    def state_dict(self) -> dict:
        """What the task itself trains besides the model (e.g. a discriminator), for exact resume."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no training state, got {sorted(state)}")


def _validation_batches(split, device, batch_size: int):
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        yield idx, sample_batch(split, idx, device=device)


def _mean_y_psnr(task, model: nn.Module, split, device, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    scores = []
    for idx, batch in _validation_batches(split, device, batch_size):
        scores.extend(_y_psnrs(to_uint8(task.predict(model, batch.lr)[0][-1]), split, idx))
    model.train(was_training)
    return float(np.mean(scores))


def _y_psnrs(sr: np.ndarray, split, idx: np.ndarray) -> list[float]:
    """Y-PSNR (official DIC metric) of uint8 SR images against the split's HR images `idx`."""
    c = CROP_BORDER
    return [psnr(rgb_to_y(sr[i])[c:-c, c:-c], rgb_to_y(split.hr[k])[c:-c, c:-c]) for i, k in enumerate(idx)]


def weighted_heatmap_mse(heatmaps: torch.Tensor, target: torch.Tensor, foreground_weight: float) -> torch.Tensor:
    """mean((1 + w * [target > 0.1]) * (h - target)^2): with w > 0 the few peak cells outweigh the flat
    background, so predicting all zeros (a plateau plain MSE falls onto) is no longer nearly optimal."""
    error = (heatmaps.float() - target) ** 2
    if foreground_weight:
        error = error * (1.0 + foreground_weight * (target > 0.1).float())
    return error.mean()


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


class MSFSRTask(_Task):
    """MSFSR: per stage s, L1(output_s, HR_s) + coarse_weight * L1(coarse_s, HR_s) + boundary_weight *
    foreground-weighted MSE(boundaries_s, targets_s), with HR_s the HR area-downsampled to the stage's output
    and the boundary targets from the 68 labels at the stage's input size (`training.boundaries`).

    Stage by stage: the first `fractions[0]` of the iterations train stage 1 alone, then stages 1-2, then all
    three (later stages are only candidates for "best" once all run). A stage that joins during the run starts
    from a copy of the stage before it (the stages have the same shapes and all learn a x2 face upscale; the
    first session's run, with stage 3 from random weights, stayed below bicubic 1,300 iterations after stage 3
    joined). A resumed run whose stages are already active copies nothing. Most iterations go to the last
    stage: only its output is the model's result, and stages 1-2 keep training with it. The paper's GAN term at the last
    stage is left out (PSNR-oriented weights); loss weights are not published upstream, these are ours.
    """

    name = "msfsr"

    def __init__(self, boundary_weight: float = 1.0, coarse_weight: float = 0.5, foreground_weight: float = 10.0,
                 fractions: tuple[float, ...] = (0.1, 0.15, 0.75)):
        super().__init__()
        self.boundary_weight, self.coarse_weight, self.foreground_weight = boundary_weight, coarse_weight, \
            foreground_weight
        self.fractions = fractions
        self.active = len(fractions)
        self._seen_active: int | None = None  # the active count at the previous iteration of this run
        self._joining: list[int] = []  # stages (0-based) to initialise from the stage before at the next loss

    @classmethod
    def from_args(cls, args) -> "MSFSRTask":
        if args.final_stage_only:  # fine-tuning trained weights: every stage from the start
            return cls(boundary_weight=args.boundary_weight, fractions=(0.0, 0.0, 1.0))
        return cls(boundary_weight=args.boundary_weight)

    @property
    def final_model_ready(self) -> bool:
        return self.active == len(self.fractions)

    def set_iteration(self, iteration: int, total: int) -> None:
        bounds = np.cumsum(self.fractions) * total
        self.active = int(min(len(self.fractions), 1 + np.searchsorted(bounds, iteration, side="right")))
        if self._seen_active is not None and self.active > self._seen_active:
            self._joining += list(range(self._seen_active, self.active))
        self._seen_active = self.active

    def status(self) -> str:
        return f"stages 1-{self.active}"

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict]:
        from .boundaries import BOUNDARY_SIGMAS, boundary_maps

        for stage in self._joining:
            model.stages[stage].load_state_dict(model.stages[stage - 1].state_dict())
            log.info("msfsr: stage %d starts from a copy of stage %d", stage + 1, stage)
        self._joining = []
        x, parts = batch.lr, {"l1": 0.0, "boundary": 0.0}
        total = torch.zeros((), device=x.device)
        landmarks = batch.landmarks.cpu().numpy()
        for stage, module in enumerate(model.stages[:self.active]):
            coarse, boundaries, x = module(x)
            target = F.interpolate(batch.hr.float(), size=x.shape[-1], mode="area")
            maps = np.stack([boundary_maps(lm, boundaries.shape[-1], HR_SIZE, BOUNDARY_SIGMAS[stage])
                             for lm in landmarks])
            boundary = weighted_heatmap_mse(boundaries, torch.from_numpy(maps).to(x.device), self.foreground_weight)
            l1 = F.l1_loss(x.float(), target) + self.coarse_weight * F.l1_loss(coarse.float(), target)
            total = total + l1 + self.boundary_weight * boundary
            parts["l1"] += float(l1.detach())
            parts["boundary"] += float(boundary.detach())
        return total, parts

    @torch.no_grad()
    def predict(self, model: nn.Module, lr: torch.Tensor, steps: int | None = None):
        """-> ([SR 128x128], []); before all stages train, the last active stage's output, bicubic to 128."""
        x = lr
        for module in model.stages[:self.active]:
            x = module(x)[2]
        if x.shape[-1] != HR_SIZE:
            x = F.interpolate(x, size=HR_SIZE, mode="bicubic", align_corners=False)
        return [x.clamp(0, 1)], []


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


# (model, task) -> task class; "sr" is the model's own objective.
TASKS = {("dic", "sr"): DICTask, ("dic", "landmarks"): DICLandmarkTask, ("dicgan", "sr"): DICGANTask,
         ("pfsr", "sr"): PFSRTask,
         ("pfsr_x4", "sr"): PFSRX4Task, ("msfsr", "sr"): MSFSRTask, ("panini", "sr"): PaniniTask}


def get_task(name: str, args=None, task: str = "sr", **kwargs):
    """The training task for a model: from parsed CLI `args` (task-specific options), else `kwargs`."""
    task = getattr(args, "task", task) if args is not None else task
    if (name, task) not in TASKS:
        available = ", ".join(f"{m} --task {t}" for m, t in TASKS)
        raise ValueError(f"no training task {task!r} for model {name!r}; available: {available}")
    cls = TASKS[(name, task)]
    return cls.from_args(args) if args is not None else cls(**kwargs)
