"""Evaluate SR weights on a split: Y-PSNR / SSIM (official DIC metric) per step, next to bicubic, plus landmark NME.

    python -m training.evaluate --model dic --weights models/weights/dic_utk_cpu_demo.safetensors --split test

Prints a Markdown table and writes JSON (--json, default runs/eval/<weights stem>_<split>.json).
Bicubic = PIL BICUBIC upsampling of the uint8 LR to 128x128 (the README reference: 24.12 dB / 0.666 on test).
NME = arg-max of each step's heatmaps x 4 vs the labelled landmarks, / outer-eye-corner distance (36-45).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .data import DataError, FaceSplit, load_split
from .metrics import landmark_nme, sharpness_ratio, to_uint8, y_psnr_ssim

__all__ = ["LEVEL_SEEDS", "bicubic_upsample", "evaluate_bicubic", "evaluate_model", "markdown_table", "main",
           "per_face_psnr", "record_faces", "super_resolve", "upscale_bicubic"]

# One fixed recording per degradation level, so every method (and the gate's calibration) sees the same pixels
LEVEL_SEEDS = {"clean": 0, "camera": 101, "heavy": 202}


def bicubic_upsample(lr: np.ndarray, size: int = 128) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(lr).resize((size, size), Image.BICUBIC), dtype=np.uint8)


def upscale_bicubic(lr: np.ndarray, size: int) -> np.ndarray:
    """`bicubic_upsample` of each face of [N, h, w, 3]."""
    return np.stack([bicubic_upsample(face, size) for face in lr])


def record_faces(hr: np.ndarray, size: int, level: str) -> np.ndarray:
    """The LR faces a camera at `level` records (`training.degrade`, seeded per level; clean: PIL bicubic, the
    training pair convention)."""
    from .degrade import degrade_lr_set

    if level == "clean":
        return upscale_bicubic(hr, size)
    return degrade_lr_set(hr, size, level, LEVEL_SEEDS.get(level, 7))


def super_resolve(model, lr: np.ndarray, batch: int = 25) -> np.ndarray:
    """The model's last step for uint8 LR faces, as uint8 HR images."""
    from runtime.frames import hwc_uint8_to_nchw

    out = []
    with torch.no_grad():
        for start in range(0, len(lr), batch):
            steps, _ = model.unroll(torch.from_numpy(hwc_uint8_to_nchw(lr[start:start + batch])), last_heatmap=False)
            out.append(to_uint8(steps[-1]))
    return np.concatenate(out)


def per_face_psnr(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """Y-PSNR (the official metric) of each face."""
    return np.array([y_psnr_ssim(s, h)[0] for s, h in zip(sr, hr)])


def evaluate_bicubic(split: FaceSplit) -> dict:
    bicubic = [bicubic_upsample(lr) for lr in split.lr]
    scores = np.array([y_psnr_ssim(b, hr) for b, hr in zip(bicubic, split.hr)])
    return {"method": "bicubic", "psnr": float(scores[:, 0].mean()), "ssim": float(scores[:, 1].mean()),
            "sharpness": float(np.mean([sharpness_ratio(b, h) for b, h in zip(bicubic, split.hr)])),
            "nme": None, "images": len(split)}


def _at_size(images: torch.Tensor, size: int) -> torch.Tensor:
    """A step's output at the HR size: intermediate outputs of multi-stage models (MSFSR) are smaller."""
    if images.shape[-1] == size:
        return images
    return torch.nn.functional.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)


@torch.no_grad()
def evaluate_model(model, split: FaceSplit, steps: int | None = None, batch_size: int = 25) -> list[dict]:
    """One row per step 1..steps: mean Y-PSNR, SSIM of SR_t and NME of heatmap_t (from the landmark net on SR_t;
    None for models without a landmark branch)."""
    from models.dic import heatmap_peaks

    from runtime.frames import hwc_uint8_to_nchw

    model.eval()
    psnrs, ssims, nmes, sharp = [], [], [], []
    for start in range(0, len(split), batch_size):
        stop = min(start + batch_size, len(split))
        lr = torch.from_numpy(hwc_uint8_to_nchw(split.lr[start:stop]))
        sr_steps, hm_steps = model.unroll(lr, steps=steps, last_heatmap=model.supports_landmarks)
        steps = len(sr_steps)  # None (all of a recurrent model's steps, or a model without steps) resolved
        for per_step in (psnrs, ssims, nmes, sharp):
            per_step.extend([] for _ in range(steps - len(per_step)))
        for t in range(steps):
            sr = to_uint8(_at_size(sr_steps[t], split.hr.shape[1]))
            for i in range(stop - start):
                p, s = y_psnr_ssim(sr[i], split.hr[start + i])
                psnrs[t].append(p)
                ssims[t].append(s)
                sharp[t].append(sharpness_ratio(sr[i], split.hr[start + i]))
            if t < len(hm_steps):
                pred = heatmap_peaks(hm_steps[t].float()).numpy()
                nmes[t].extend(landmark_nme(pred, split.landmarks[start:stop]).tolist())
    return [{"method": f"model step {t + 1}", "step": t + 1, "psnr": float(np.mean(psnrs[t])),
             "ssim": float(np.mean(ssims[t])), "sharpness": float(np.mean(sharp[t])),
             "nme": float(np.mean(nmes[t])) if nmes[t] else None,
             "images": len(split)} for t in range(steps)]


def markdown_table(rows: list[dict]) -> str:
    lines = ["| method | Y-PSNR (dB) | SSIM | sharpness (SR/HR) | NME (outer-eye) |", "|---|---|---|---|---|"]
    for r in rows:
        nme = "-" if r.get("nme") is None else f"{r['nme']:.4f}"
        lines.append(f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['sharpness']:.3f} | {nme} |")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dic")
    p.add_argument("--weights", required=True)
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--steps", type=int, default=None, help="recurrent models: unroll steps (default: all)")
    p.add_argument("--limit", type=int, default=None, help="first K images of the split")
    p.add_argument("--data", default=None)
    p.add_argument("--cache", default="runs/cache")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--no-bicubic", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from models import WeightsError, create_model, model_io

    try:
        model = create_model(args.model, weights=args.weights)
        lr_size = model_io(args.model, model.config).input_size
        # the cache only holds whole splits; --limit slices after loading
        split = load_split(args.split, args.data, cache_dir=args.cache or None, lr_size=lr_size).subset(args.limit)
    except (DataError, WeightsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t0 = time.time()
    rows = [] if args.no_bicubic else [evaluate_bicubic(split)]
    rows += evaluate_model(model, split, args.steps)
    print(f"{args.model} {args.weights} on {args.split} ({len(split)} images, {time.time() - t0:.0f} s)\n")
    print(markdown_table(rows))
    out = Path(args.json or f"runs/eval/{Path(args.weights).stem}_{args.split}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "weights": str(args.weights), "split": args.split,
                               "images": len(split), "config": model.config.to_dict(), "rows": rows}, indent=1))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
