"""Real face inputs for verifying exported models: the UTK splits by the pair convention (training.data)."""
from __future__ import annotations

import logging

import numpy as np

from runtime.frames import hwc_uint8_to_nchw
from runtime.shared_data import MISSING_HINT, split_names, utk_dir

from . import ExportError

log = logging.getLogger(__name__)


def face_pairs(count: int, split: str = "val", lr_size: int = 16) -> tuple[np.ndarray, np.ndarray, str]:
    """(LR [N,3,lr_size,lr_size], HR [N,3,128,128]) float32 RGB in [0,1] from the UTK split, and a description.

    Raises ExportError when the shared faces are absent."""
    from training.data import decode_pair

    faces = utk_dir()
    if faces is None:
        raise ExportError(f"this check needs the shared UTK faces ({MISSING_HINT})")
    names = split_names(faces, split, count)
    hrs, lrs = zip(*(decode_pair(faces / "images" / name, lr_size) for name in names))
    return hwc_uint8_to_nchw(np.stack(lrs)), hwc_uint8_to_nchw(np.stack(hrs)), f"faces-utk/{split}[:{len(names)}]"


def face_inputs(count: int = 16, lr_size: int = 16, split: str = "val", seed: int = 0) -> tuple[np.ndarray, str]:
    """`count` LR faces [count,3,lr_size,lr_size] from the UTK split, or seeded uniform noise when the shared
    data is absent (with a warning); returns the batch and where it came from."""
    try:
        lr, _, source = face_pairs(count, split, lr_size)
    except ExportError:
        log.warning("shared UTK faces not found (%s); verifying on random inputs", MISSING_HINT)
        return np.random.default_rng(seed).random((count, 3, lr_size, lr_size), dtype=np.float32), "random"
    return lr, source
