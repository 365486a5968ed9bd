"""Mirror self-ensemble: every batch runs twice, as recorded and mirrored left-right, and the two images are
averaged (the "self-ensemble" of EDSR+ / BasicSR's test-time augmentation, with the one flip that keeps a face
upright). Twice the SR time for a little more fidelity; other outputs (landmarks) come from the plain pass.
"""
from __future__ import annotations

import numpy as np

from .base import Backend


class MirrorEnsemble(Backend):
    """Wraps an inactive backend; activates, runs and releases it."""

    def __init__(self, inner: Backend):
        super().__init__(inner.artifact)
        self.inner = inner
        self.name = f"{inner.name}+mirror"
        self.concurrent_infer = inner.concurrent_infer

    @property
    def batch_limit(self) -> int | None:
        return self.inner.batch_limit

    @batch_limit.setter
    def batch_limit(self, value: int | None) -> None:
        if hasattr(self, "inner"):  # Backend.__init__ sets it before `inner` exists
            self.inner.batch_limit = value

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        image_in, image_out = self.artifact.image_input.name, self.artifact.image_output.name
        plain = self.inner.infer(feeds, check_inputs=False)
        mirrored = self.inner.infer({**feeds, image_in: np.ascontiguousarray(feeds[image_in][..., ::-1])},
                                    check_inputs=False)
        image = plain[image_out]
        average = (image.astype(np.float32) + mirrored[image_out][..., ::-1].astype(np.float32)) / 2
        return {**plain, image_out: average.astype(image.dtype)}
