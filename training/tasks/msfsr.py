"""MSFSR training task: three x2 stages guided by facial boundary maps."""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


from ..data import HR_SIZE
from .base import Batch, _Task, weighted_heatmap_mse

log = logging.getLogger(__name__)


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
        from ..boundaries import BOUNDARY_SIGMAS, boundary_maps

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
