"""Real face inputs for verifying exported models (the UTK val split, DIC pair convention)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

LR_SIZE = 16


def shared_dir() -> Path | None:
    """`$FSR_SHARED_DIR`, else `../shared` beside the repository (or the working directory)."""
    candidates = []
    if os.environ.get("FSR_SHARED_DIR"):
        candidates.append(Path(os.environ["FSR_SHARED_DIR"]))
    candidates += [Path(__file__).resolve().parents[2] / "shared", Path.cwd().parent / "shared"]
    return next((c for c in candidates if (c / "data").is_dir()), None)


def utk_dir() -> Path | None:
    root = shared_dir()
    faces = root / "data" / "faces-utk" if root else None
    return faces if faces and (faces / "splits.json").is_file() else None


def lr_from_crop(path: Path) -> np.ndarray:
    """The pair convention's LR of an aligned crop (training.data.decode_pair), RGB float32 CHW in [0,1]."""
    from training.data import decode_pair

    _, lr = decode_pair(path)
    return lr.astype(np.float32).transpose(2, 0, 1) / 255.0


def face_inputs(count: int = 16, split: str = "val", seed: int = 0) -> tuple[np.ndarray, str]:
    """`count` LR faces from the UTK split, or seeded uniform noise when ../shared is absent.

    Returns the batch [count,3,16,16] and a short description of where it came from.
    """
    faces = utk_dir()
    if faces is None:
        log.warning("../shared/data/faces-utk not found (set FSR_SHARED_DIR); verifying on random inputs")
        return np.random.default_rng(seed).random((count, 3, LR_SIZE, LR_SIZE), dtype=np.float32), "random"
    names = json.loads((faces / "splits.json").read_text())[split][:count]
    batch = np.stack([lr_from_crop(faces / "images" / n) for n in names])
    return batch, f"faces-utk/{split}[:{len(names)}]"
