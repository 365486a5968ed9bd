"""`python -m benchmarks.fusion_limits`: what limits a fused face — the fusion, or the model that reads it?

UTK validation faces (tuning data: this decides what to build next, not what ships), each filmed by a still
camera drawn from the camera level in a burst of frames (`training.burst`: sub-pixel shake, the camera's noise
and codec per frame) and fused as `--fuse-frames` fuses them. The fused-grade twin reads the fused face; every
row's gain is over bicubic of the current frame as the camera really recorded it, so rows that take the noise
or the codec away are upper bounds: what a perfect denoiser, or a codec-free camera, would give this model.

- K = 1 / 8 / 32 frames: what fusion buys, and whether more frames still buy anything.
- K = 8 without sensor noise: the most any better fusion of the same frames could add by denoising.
- K = 8 without noise and codec: what the codec's residue costs.
- Face 12 px instead of 16 (the runtime's tiled model reads it in a 16 px tile with its surroundings, as in
  `benchmarks.video`'s group photo, where faces are 11-12 px): what a smaller face costs.
- Shift and add: the burst's pixels placed at their registered positions on a grid twice as fine, then bicubic
  to 128 px, against bicubic of the fused face: the detail beyond the average that a model reading the K frames
  themselves could start from (the aliasing that sub-pixel shifts reveal).
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from .common import markdown_table, run_and_report

QUICK_FACES = 8
TILE = 16  # the ×8 models' input


@dataclass(frozen=True)
class Filming:
    label: str
    frames: int
    face_px: int = TILE
    noise: bool = True
    codec: bool = True


FILMINGS = (Filming("K = 1 (no fusion)", 1), Filming("K = 8, as the runtime fuses", 8),
            Filming("K = 32", 32), Filming("K = 8, no sensor noise", 8, noise=False),
            Filming("K = 8, no noise and no codec", 8, noise=False, codec=False),
            Filming("K = 8, face 12 px in its 16 px tile", 8, face_px=12))


def film(hr: np.ndarray, filming: Filming, seed: int) -> list[list[np.ndarray]]:
    """Per face, its burst of recorded windows (twice the face's side, the face in the middle): each face's
    camera is drawn from the camera level with the same seed whatever the filming, then stripped of noise
    or codec as `filming` says."""
    from training.burst import record_burst
    from training.degrade import LEVELS

    cameras = np.random.default_rng(seed)
    bursts = []
    for i, face in enumerate(hr):
        camera = LEVELS["camera"].params(cameras)
        camera = replace(camera, noise=camera.noise if filming.noise else None,
                         codec=camera.codec if filming.codec else None)
        bursts.append(record_burst(face, filming.face_px, camera, filming.frames, np.random.default_rng([seed, i])))
    return bursts


def tile(window: np.ndarray) -> np.ndarray:
    """The model's 16 px input: the middle of a recorded window."""
    start = (window.shape[0] - TILE) // 2
    return window[start:start + TILE, start:start + TILE]


def fused(burst: list[np.ndarray], face_px: int) -> np.ndarray:
    from runtime.fusion import fuse_windows
    from training.burst import face_in_window

    return fuse_windows(burst[0], burst[1:], face_in_window(face_px))[0] if len(burst) > 1 else burst[0]


def face_psnr(tile_128: np.ndarray, hr: np.ndarray, face_px: int) -> float:
    """Y-PSNR of the face inside a 128 px output of a 16 px tile against the HR face at that size."""
    from training.evaluate import per_face_psnr

    start = (face_px // 2 - (2 * face_px - TILE) // 2) * 8
    side = face_px * 8
    truth = hr if side == hr.shape[0] else cv2.resize(hr, (side, side), interpolation=cv2.INTER_AREA)
    return float(per_face_psnr(tile_128[None, start:start + side, start:start + side], truth[None])[0])


def shift_and_add(burst: list[np.ndarray], face_px: int, scale: int = 2, sigma: float = 0.5) -> np.ndarray:
    """The burst's pixels splatted (Gaussian, `sigma` fine-grid px) at their registered positions on a grid
    `scale` times finer than frame 0's; frame 0 upscaled fills what no pixel reaches."""
    from runtime.fusion import MAX_SHIFT_FRACTION, MIN_RESPONSE, REGISTER_ECC, find_shift
    from training.burst import face_in_window

    h, w = burst[0].shape[:2]
    total, weight = np.zeros((h * scale, w * scale, 3)), np.zeros((h * scale, w * scale))
    face = face_in_window(face_px)
    current = cv2.cvtColor(burst[0], cv2.COLOR_RGB2GRAY)[face].astype(np.float32)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    for frame in burst:
        earlier = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)[face].astype(np.float32)
        shift = find_shift(earlier, current, MIN_RESPONSE, MAX_SHIFT_FRACTION * face_px, REGISTER_ECC)
        if shift is None:
            continue
        x, y = (cols + 0.5 + shift[0]) * scale - 0.5, (rows + 0.5 + shift[1]) * scale - 0.5  # frame 0's grid
        for dy in (-1, 0, 1, 2):
            for dx in (-1, 0, 1, 2):
                gx, gy = np.floor(x).astype(int) + dx, np.floor(y).astype(int) + dy
                inside = (gx >= 0) & (gx < w * scale) & (gy >= 0) & (gy < h * scale)
                k = np.exp(-0.5 * ((gx - x) ** 2 + (gy - y) ** 2) / sigma ** 2)[inside]
                np.add.at(weight, (gy[inside], gx[inside]), k)
                np.add.at(total, (gy[inside], gx[inside]), k[:, None] * frame[inside])
    fill = cv2.resize(burst[0], (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint((total + 0.05 * fill) / (weight + 0.05)[..., None]), 0, 255).astype(np.uint8)


def run_limits(args) -> dict:
    from models import create_model, fused_grade_weights
    from training.data import load_split
    from training.evaluate import super_resolve

    count = QUICK_FACES if args.quick else args.limit
    hr = load_split("val", args.data, cache_dir=args.cache).subset(count).hr
    weights = fused_grade_weights("pfsr")
    model = create_model("pfsr", weights=weights)
    baseline = {}  # per face size: bicubic of the current frame as recorded (noise and codec kept)
    rows, filmed = [], {}
    for filming in FILMINGS:
        bursts = filmed[filming] = film(hr, filming, args.seed)
        inputs = np.stack([tile(fused(b, filming.face_px)) for b in bursts])
        model_db = [face_psnr(sr, h, filming.face_px) for sr, h in zip(super_resolve(model, inputs), hr)]
        if filming.noise and filming.codec and filming.face_px not in baseline:
            baseline[filming.face_px] = [face_psnr(bicubic(tile(b[0])), h, filming.face_px) for b, h in zip(bursts, hr)]
        gain = np.array(model_db) - np.array(baseline[filming.face_px])
        rows.append({"filming": filming.label, "face_px": filming.face_px, "frames": filming.frames,
                     "bicubic_db": float(np.mean(baseline[filming.face_px])), "model_db": float(np.mean(model_db)),
                     "gain_db": float(gain.mean())})
    bursts = filmed[FILMINGS[1]]  # K = 8 as the runtime fuses
    averaged = [face_psnr(bicubic(tile(fused(b, TILE))), h, TILE) for b, h in zip(bursts, hr)]
    added = [face_psnr(bicubic(tile_of(shift_and_add(b, TILE))), h, TILE) for b, h in zip(bursts, hr)]
    return {"split": "val", "images": int(len(hr)), "weights": weights.name, "seed": args.seed, "rows": rows,
            "shift_and_add": {"bicubic_of_fused_db": float(np.mean(averaged)),
                              "bicubic_of_shift_and_add_db": float(np.mean(added))}}


def bicubic(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (128, 128), interpolation=cv2.INTER_CUBIC)


def tile_of(fine: np.ndarray) -> np.ndarray:
    """The face's tile of a window upscaled ×2 (32 px)."""
    start = (fine.shape[0] - 2 * TILE) // 2
    return fine[start:start + 2 * TILE, start:start + 2 * TILE]


def to_markdown(payload: dict) -> str:
    rows = [[r["filming"], f"{r['bicubic_db']:.2f}", f"{r['model_db']:.2f}", f"{r['gain_db']:+.2f}"]
            for r in payload["rows"]]
    added = payload["shift_and_add"]
    return (f"# Fusion's limits — UTK {payload['split']} split, {payload['images']} faces, camera level\n\n"
            f"Command: `{payload['command']}`  \nModel: `{payload['weights']}` on the fused face; gain over bicubic "
            "of the current frame as recorded (rows without noise or codec are upper bounds). Y-PSNR in the face.\n\n"
            + markdown_table(["filming", "bicubic (dB)", "fused-grade twin (dB)", "gain"], rows)
            + f"\nShift and add (K = 8, 16 px faces): bicubic of the fused face {added['bicubic_of_fused_db']:.2f} dB, "
            f"of the frames placed on a 2× grid {added['bicubic_of_shift_and_add_db']:.2f} dB "
            f"({added['bicubic_of_shift_and_add_db'] - added['bicubic_of_fused_db']:+.2f}).\n")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.fusion_limits", description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=7, help="draws the cameras and their frames (default 7)")
    p.add_argument("--limit", type=int, default=100, help="first K validation faces (default 100)")
    p.add_argument("--quick", action="store_true", help=f"first {QUICK_FACES} validation faces")
    p.add_argument("--data", help="faces-utk folder (default: ../shared/data/faces-utk)")
    p.add_argument("--cache", default=None, help="folder for the decoded-split cache")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    args = p.parse_args(argv)
    if args.limit < 1:
        p.error("--limit must be at least 1")
    return args


def main(argv=None) -> int:
    return run_and_report("fusion_limits", run_limits, parse_args(argv), to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
