"""Where the project's data folder is: `$FSR_SHARED_DIR`, else `../shared` beside the repository.

The one home for locating the shared UTKFace crops, their fixed split and the scene files; the training
side, export, calibration, benchmarks and tests all ask here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
UTK_SUBDIR = Path("data") / "faces-utk"
MISSING_HINT = "put the shared data folder at ../shared beside the repository, or set FSR_SHARED_DIR"


def shared_dir() -> Path | None:
    """The shared data folder (it has a `data/` subfolder), or None when there is none."""
    candidates = [Path(os.environ["FSR_SHARED_DIR"])] if os.environ.get("FSR_SHARED_DIR") else []
    candidates += [REPO_ROOT.parent / "shared", Path.cwd().parent / "shared"]
    return next((c for c in candidates if (c / "data").is_dir()), None)


def default_utk_dir() -> Path:
    """Where the UTKFace folder should be (it may not exist): used for defaults and messages."""
    root = shared_dir() or (Path(os.environ["FSR_SHARED_DIR"]) if os.environ.get("FSR_SHARED_DIR")
                            else REPO_ROOT.parent / "shared")
    return root / UTK_SUBDIR


def utk_dir() -> Path | None:
    """The UTKFace folder (images/, landmarks68.npz, splits.json), or None when it is absent."""
    faces = default_utk_dir()
    return faces if (faces / "splits.json").is_file() else None


def read_splits(faces: Path) -> dict[str, list[str]]:
    """The fixed split: {"train": [...], "val": [...], "test": [...]} of image file names."""
    return json.loads((Path(faces) / "splits.json").read_text())


def split_names(faces: Path, split: str, count: int | None = None) -> list[str]:
    """The first `count` names (all when None) of one split; ValueError naming the splits if unknown."""
    splits = read_splits(faces)
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; {Path(faces) / 'splits.json'} has {', '.join(sorted(splits))}")
    return splits[split][:count] if count is not None else splits[split]
