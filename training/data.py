"""Face SR training data: UTKFace crops -> (LR 16x16, HR 128x128, 68 landmarks) pairs.

Pair convention (../shared/README.md, the DIC paper's): HR = the whole 200x200 crop resized to
128x128 with PIL BICUBIC; LR = HR resized to 16x16 with PIL BICUBIC. Landmarks (200-px coordinates)
scale by 128/200. Splits are decoded once into uint8 arrays and may be cached as .npz files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from runtime.files import atomic_path
from runtime.shared_data import default_utk_dir, read_splits

__all__ = [
    "DEFAULT_DATA_DIR", "DataError", "FaceSplit", "resolve_data_dir", "decode_pair", "load_split",
    "FLIP_PERMUTATION_68", "flip_landmarks", "make_heatmaps", "HR_SIZE", "LR_SIZE", "HEATMAP_SIZE",
]

log = logging.getLogger(__name__)

HR_SIZE, LR_SIZE, HEATMAP_SIZE = 128, 16, 32
SOURCE_SIZE = 200
# The project's data: $FSR_SHARED_DIR, else the shared folder next to the repository root.
DEFAULT_DATA_DIR = default_utk_dir()


class DataError(RuntimeError):
    """Missing or unusable training / evaluation data."""


def _mirror_permutation_68() -> np.ndarray:
    """iBUG 68-point mirror: index i of the flipped face takes point perm[i] of the original."""
    perm = np.arange(68)
    pairs = []
    pairs += [(i, 16 - i) for i in range(0, 8)]  # jaw 0-16 reversed (8 stays)
    pairs += [(17 + i, 26 - i) for i in range(5)]  # brows 17-21 <-> 26-22
    pairs += [(31, 35), (32, 34)]  # nose bottom 31-35 reversed (27-30 and 33 stay)
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48, 54), (49, 53), (50, 52)]  # outer lip top 48-54 reversed
    pairs += [(55, 59), (56, 58)]  # outer lip bottom 55-59 reversed
    pairs += [(60, 64), (61, 63)]  # inner lip top 60-64 reversed
    pairs += [(65, 67)]  # inner lip bottom 65-67 reversed
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


FLIP_PERMUTATION_68 = _mirror_permutation_68()


def flip_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks [..., 68, 2] (x, y in pixel-index coordinates) of a horizontally flipped image."""
    flipped = landmarks[..., FLIP_PERMUTATION_68, :].copy()
    flipped[..., 0] = (width - 1) - flipped[..., 0]
    return flipped


def make_heatmaps(landmarks: torch.Tensor, size: int = HEATMAP_SIZE, stride: float = 4.0,
                  sigma: float = 1.0) -> torch.Tensor:
    """GT heatmaps: one Gaussian (peak 1, `sigma` in heatmap pixels) per landmark.

    landmarks: [N, K, 2] (x, y) in HR pixels; centre on the heatmap grid = landmark / stride
    (the inverse of `models.dic.heatmap_peaks`, which maps argmax index * stride). Returns [N, K, size, size].
    """
    grid = torch.arange(size, dtype=torch.float32, device=landmarks.device)
    centre = landmarks.float() / stride
    gx = torch.exp(-((grid.view(1, 1, -1) - centre[..., 0:1]) ** 2) / (2 * sigma**2))  # N K W
    gy = torch.exp(-((grid.view(1, 1, -1) - centre[..., 1:2]) ** 2) / (2 * sigma**2))  # N K H
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    path = Path(data_dir) if data_dir is not None else DEFAULT_DATA_DIR
    missing = [p for p in (path / "images", path / "landmarks68.npz", path / "splits.json") if not p.exists()]
    if missing:
        raise DataError(
            f"face data not found at {path} (missing: {', '.join(p.name for p in missing)}). "
            "Expected the shared UTKFace set ../shared/data/faces-utk (images/, landmarks68.npz, splits.json) "
            "next to the repository; pass --data DIR to point elsewhere."
        )
    return path


def decode_pair(path: str | Path, lr_size: int = LR_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One face crop -> (HR uint8 [128,128,3], LR uint8 [lr_size,lr_size,3]) by the project's pair convention
    (16 for the x8 models; other sizes follow the same rule: HR resized with PIL BICUBIC)."""
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        hr = img.resize((HR_SIZE, HR_SIZE), Image.BICUBIC)
    lr = hr.resize((lr_size, lr_size), Image.BICUBIC)
    return np.asarray(hr, dtype=np.uint8), np.asarray(lr, dtype=np.uint8)


@dataclass
class FaceSplit:
    """A decoded split: hr [N,128,128,3] uint8, lr [N,S,S,3] uint8 (S = 16 or the model's input size),
    landmarks [N,68,2] float32 (HR pixels)."""

    names: list[str]
    hr: np.ndarray
    lr: np.ndarray
    landmarks: np.ndarray
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, count: int | None) -> "FaceSplit":
        if count is None or count >= len(self):
            return self
        return FaceSplit(self.names[:count], self.hr[:count], self.lr[:count], self.landmarks[:count], self.skipped)


def load_split(split: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None,
               limit: int | None = None, progress: bool = False, lr_size: int = LR_SIZE) -> FaceSplit:
    """Decode a split ("train", "val", "test") with LR images of `lr_size` px (16: the x8 models, 32: x4);
    with `cache_dir`, reuse/write the decoded arrays as an .npz there.

    Images that fail to decode are skipped and counted (`FaceSplit.skipped`, logged); an image with
    no landmark entry is an error (the labels file does not match the images).
    """
    root = resolve_data_dir(data_dir)
    names = read_splits(root)
    if split not in names:
        raise DataError(f"unknown split {split!r}; splits.json has {sorted(names)}")
    names = list(names[split])
    if limit is not None:
        names = names[:limit]
    cache = None
    if cache_dir is not None:
        suffix = ("" if limit is None else f"_first{limit}") + ("" if lr_size == LR_SIZE else f"_lr{lr_size}")
        cache = Path(cache_dir) / f"faces_utk_{split}{suffix}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                cached = FaceSplit(list(z["names"]), z["hr"], z["lr"], z["landmarks"], int(z["skipped"]))
            if len(cached) + cached.skipped == len(names):
                return cached
            log.warning("cache %s does not match the split; re-decoding", cache)

    with np.load(root / "landmarks68.npz") as z:
        index = {str(n): i for i, n in enumerate(z["names"])}
        all_landmarks = z["landmarks"]
    absent = [n for n in names if n not in index]
    if absent:
        raise DataError(
            f"{len(absent)} image(s) of split {split!r} have no landmarks in {root / 'landmarks68.npz'} "
            f"(first: {absent[:3]}); the labels file does not match the images."
        )
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc=f"decode {split}", mininterval=5)
    kept, hrs, lrs, lms, skipped = [], [], [], [], 0
    for name in iterator:
        try:
            hr, lr = decode_pair(root / "images" / name, lr_size)
        except (OSError, ValueError) as err:
            skipped += 1
            log.warning("skipping %s: cannot decode (%s)", name, err)
            continue
        kept.append(name)
        hrs.append(hr)
        lrs.append(lr)
        lms.append(all_landmarks[index[name]] * (HR_SIZE / SOURCE_SIZE))
    if skipped:
        log.warning("%s: skipped %d undecodable image(s) of %d", split, skipped, len(names))
    if not kept:
        raise DataError(f"no decodable images in split {split!r} under {root / 'images'}")
    out = FaceSplit(kept, np.stack(hrs), np.stack(lrs), np.stack(lms).astype(np.float32), skipped)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp:
            np.savez(tmp, names=np.array(out.names), hr=out.hr, lr=out.lr, landmarks=out.landmarks,
                     skipped=np.array(out.skipped))
    return out
