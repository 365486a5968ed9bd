"""Training batches: drawn in order from the run's sampler, made inline or ahead in worker processes.

A batch is drawn (which faces, which are mirrored, the seed of their re-framing and recording) from the run's
torch generator, always in the main process and in the same order, so a run makes the same batches with or
without workers and resumes exactly. Making a batch (`make_pairs`: cropping, and with `--camera` recording the
faces through blur, noise and a codec, with `--burst` eight times over and fused) is numpy/OpenCV/PyAV work that
can take longer than the optimiser step (a burst batch of 16 faces: about 1.8 s on one core of the 2-core CPU).
With `workers` > 0, `BatchMaker` hands that work to processes of its own (each gets a copy of the decoded
split: about 0.45 GB for UTK's train split) and keeps 2 batches per worker in flight; the checkpoint then records
the sampler as it was before the first batch not yet trained on.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import numpy as np
import torch

from .data import HR_SIZE, flip_landmarks

BATCHES_PER_WORKER = 2  # in flight per worker: one being made, one waiting


@dataclass(frozen=True)
class BatchDraw:
    indices: np.ndarray  # faces of the split
    flips: np.ndarray | None  # mirrored or not, per face
    seed: int | None  # the augment's random generator (None without an augment)


def draw_batch(generator: torch.Generator, split_size: int, batch: int, flip: bool, augmented: bool) -> BatchDraw:
    """The next batch's draw (the order of the calls is what older checkpoints resume with)."""
    indices = torch.randint(split_size, (batch,), generator=generator).numpy()
    flips = (torch.rand(batch, generator=generator) < 0.5).numpy() if flip else None
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator)) if augmented else None
    return BatchDraw(indices, flips, seed)


def make_pairs(split, draw: BatchDraw, augment=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hr, lr, landmarks) numpy arrays of a drawn batch."""
    rng = np.random.default_rng(draw.seed) if augment is not None else None
    return pairs(split, draw.indices, draw.flips, augment, rng)


def pairs(split, indices: np.ndarray, flips: np.ndarray | None = None, augment=None,
          rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hr, lr, landmarks) of the split's faces `indices`, mirrored where `flips` says, then re-made by
    `augment` (e.g. `training.augment.RealFraming`) with `rng`."""
    hr, lr = split.hr[indices], split.lr[indices]
    landmarks = split.landmarks[indices].copy()
    if flips is not None and flips.any():
        hr, lr = hr.copy(), lr.copy()
        hr[flips] = hr[flips][:, :, ::-1]
        lr[flips] = lr[flips][:, :, ::-1]
        landmarks[flips] = flip_landmarks(landmarks[flips], HR_SIZE)
    if augment is not None:
        hr, lr, landmarks = augment(hr, lr, landmarks, rng)
    return hr, lr, landmarks


_worker_state: tuple = ()  # (split, augment) in a worker process, set once when it starts


def _start_worker(split, augment) -> None:
    global _worker_state
    import cv2

    cv2.setNumThreads(1)  # one process per core already
    _worker_state = (split, augment)


def _make_in_worker(draw: BatchDraw):
    split, augment = _worker_state
    return make_pairs(split, draw, augment)


class BatchMaker:
    """The run's training batches in order, as numpy (hr, lr, landmarks); `workers` > 0 makes them ahead in
    worker processes. Use as a context manager (or `close()`) so the workers end with the run."""

    def __init__(self, split, generator: torch.Generator, batch: int, flip: bool = True, augment=None,
                 workers: int = 0):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self.split, self.generator, self.batch, self.flip, self.augment = split, generator, batch, flip, augment
        self.pending: deque[tuple[torch.Tensor, object]] = deque()  # (sampler state before the draw, future)
        self.pool = None
        if workers:  # spawned, not forked: a fork copies OpenCV's and FFmpeg's locks as the parent's threads held them
            self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_start_worker, initargs=(split, augment))
            self.ahead = BATCHES_PER_WORKER * workers

    def _draw(self) -> BatchDraw:
        return draw_batch(self.generator, len(self.split), self.batch, self.flip, self.augment is not None)

    def next(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.pool is None:
            return make_pairs(self.split, self._draw(), self.augment)
        try:
            while len(self.pending) < self.ahead:
                state = self.generator.get_state()
                self.pending.append((state, self.pool.submit(_make_in_worker, self._draw())))
            return self.pending.popleft()[1].result()
        except BrokenProcessPool as err:  # killed (often for memory): the run's last checkpoint is intact
            raise RuntimeError("a batch-making worker process died (out of memory?); resume from the last "
                               "checkpoint with fewer --data-workers") from err

    def sampler_state(self) -> torch.Tensor:
        """The sampler's state before the next batch to train on (what a checkpoint resumes from)."""
        return self.pending[0][0] if self.pending else self.generator.get_state()

    def close(self) -> None:
        if self.pool is not None:
            for _, future in self.pending:
                future.cancel()
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool, self.pending = None, deque()

    def __enter__(self) -> "BatchMaker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
