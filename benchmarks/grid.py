"""`python -m benchmarks.grid`: a side-by-side picture of test faces — LR, bicubic, each model, HR.

    python -m benchmarks.grid                                   # the shipped DIC, DICGAN, PFSR and Panini-Net
    python -m benchmarks.grid --models dic,dicgan --faces 0,7,21,42,77,123
    python -m benchmarks.grid --weights dic=runs/dic_joint/best.safetensors --out grid.png
    python -m benchmarks.grid --models pfsr --weights pfsr:camera=runs/pfsr_camera/best.safetensors \
        --degradation camera --out camera.png        # a second PFSR column, LR recorded by the simulated camera
    python -m benchmarks.grid --models pfsr_x4 --lr-size 32 --out x4.png
    python -m benchmarks.grid --models pfsr --weights pfsr:fused=models/weights/pfsr_fused_utk.safetensors \
        --degradation camera --burst 8 --out fused.png   # faces fused over 8 frames, as --fuse-frames 8

One row per face of the UTK test split, one column per method, every image at 128 px (LR enlarged with
nearest neighbour so its pixels show). `--degradation` records the LR with `training.degrade` at that level
(seeded, as `benchmarks.camera`). Models run in PyTorch with their shipped (or given) weights; `MODEL=PATH`
replaces a model's weights, `MODEL:LABEL=PATH` adds a column. A model without weights is left out with a
note. Written to benchmarks/results/<machine>/faces_grid.png.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from .common import RESULTS_ROOT, machine_info, machine_tag

log = logging.getLogger("benchmarks.grid")
DEFAULT_FACES = (3, 17, 58, 101, 222, 404)
LABEL_HEIGHT = 22


def model_columns(names: list[str], weights: dict[str, str], lr: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(label, SR images uint8 [N, 128, 128, 3] RGB) per model that has weights; `weights` keys are MODEL
    (replaces its weights) or MODEL:LABEL (one more column)."""
    from models import shipped_weights

    from training.evaluate import super_resolve

    entries = [(name, name, weights.get(name) or shipped_weights(name)) for name in names]
    entries += [(key.partition(":")[2], key.partition(":")[0], path) for key, path in weights.items() if ":" in key]
    columns = []
    for label, name, path in entries:
        if path is None:
            log.warning("%s: no weights (shipped or --weights), left out", name)
            continue
        from models import create_model

        columns.append((label, super_resolve(create_model(name, weights=path), lr)))
    return columns


def labelled(images: np.ndarray, label: str) -> np.ndarray:
    """A column: the label on top, the images below each other (RGB)."""
    column = np.concatenate(list(images), axis=0)
    header = np.full((LABEL_HEIGHT, column.shape[1], 3), 255, np.uint8)
    cv2.putText(header, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([header, column], axis=0)


def build_grid(split, faces: list[int], names: list[str], weights: dict[str, str], level: str = "clean",
               lr_size: int = 16, burst: int = 0) -> np.ndarray:
    """With `burst`, each face is filmed in a burst and fused (`benchmarks.camera --burst`): the LR and bicubic
    columns show the current frame, a column the fused face, and the models read the fused face."""
    from training.burst import record_burst_set
    from training.evaluate import LEVEL_SEEDS, bicubic_upsample, record_faces

    hr = split.hr[faces]
    size = hr.shape[1]
    enlarged = lambda faces: np.stack([cv2.resize(x, (size, size), interpolation=cv2.INTER_NEAREST)  # noqa: E731
                                       for x in faces])
    if burst >= 2:
        lr, fused = record_burst_set(hr, lr_size, level, burst, LEVEL_SEEDS[level])
    else:
        lr = fused = record_faces(hr, lr_size, level)
    columns = [(f"LR {lr_size} px{'' if level == 'clean' else ', ' + level}", enlarged(lr))]
    if burst >= 2:
        columns.append((f"fused, {burst} frames", enlarged(fused)))
    columns.append(("bicubic", np.stack([bicubic_upsample(x, size) for x in lr])))
    columns += model_columns(names, weights, fused)
    columns.append(("HR", hr))
    return np.concatenate([labelled(images, label) for label, images in columns], axis=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.grid", description=__doc__.split("\n")[0])
    p.add_argument("--models", type=lambda s: s.split(","), default=["dic", "dicgan", "pfsr", "msfsr", "panini"])
    p.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                   help="weights for a model instead of the shipped ones (repeatable)")
    p.add_argument("--faces", type=lambda s: [int(v) for v in s.split(",")], default=list(DEFAULT_FACES),
                   help="indices into the test split")
    p.add_argument("--degradation", default="clean", choices=("clean", "camera", "heavy"),
                   help="record the LR with training.degrade at this level (default clean: PIL bicubic)")
    p.add_argument("--burst", type=int, default=0, metavar="N",
                   help="film each face in a burst of N frames and fuse them (as --fuse-frames N); models read the "
                        "fused face, LR and bicubic show the current frame")
    p.add_argument("--lr-size", type=int, default=16, help="LR side in px (16 for the x8 models, 32 for x4)")
    p.add_argument("--data", default=None, help="face data dir (default ../shared/data/faces-utk)")
    p.add_argument("--cache", default="runs/cache")
    p.add_argument("--out", type=Path, default=None, help="PNG path (default: the machine's results folder)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from training.data import DataError, load_split

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    weights = dict(item.split("=", 1) for item in args.weights)
    try:
        split = load_split("test", args.data, cache_dir=args.cache or None)
    except DataError as err:
        log.error("error: %s", err)
        return 2
    if max(args.faces) >= len(split):
        log.error("error: --faces must be below %d (the test split's size)", len(split))
        return 2
    grid = build_grid(split, args.faces, args.models, weights, args.degradation, args.lr_size, args.burst)
    out = args.out or RESULTS_ROOT / machine_tag(machine_info()) / "faces_grid.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid[..., ::-1])
    log.info("wrote %s (%dx%d)", out, grid.shape[1], grid.shape[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
