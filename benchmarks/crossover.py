"""`python -m benchmarks.crossover`: up to which native face size does a model beat plain interpolation?

    python -m benchmarks.crossover --models artifacts/pfsr_fp32.json artifacts/dic_s2_fp32.json
    python -m benchmarks.crossover --quick          # 50 faces, CI

A face recorded at `s` px and shown at the model's output size can either be interpolated (bicubic, s ->
output) or go through the model (s -> the model's input size with INTER_AREA, or bicubic when s is smaller,
then SR). Both are scored against the aligned HR crop with the official Y-PSNR, on the UTK test split, for
native sizes from well below to well above the model's input. The largest size at which the model still
wins is the model's crossover; the runtime's routing (`runtime.routing`) enhances a face only below it.
A model whose manifest allows tiling (`runtime.tiles`) is run as the runtime runs it: on the face at its
recorded size (s x scale px, brought to the output size), with no crossover in routing.
Models run through the runtime's backends. Results: benchmarks/results/<machine>/crossover.{json,md,png}.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from .common import add_face_split_args, markdown_table, pyplot, run_and_report, save_figure

log = logging.getLogger("benchmarks.crossover")
NATIVE_SIZES = (8, 10, 12, 14, 16, 17, 18, 19, 20, 22, 24, 28, 32, 36, 40, 44, 48, 56, 64, 80, 96)
QUICK_FACES = 50


def native_faces(hr: np.ndarray, side: int) -> np.ndarray:
    """HR RGB uint8 [N,128,128,3] -> what a camera recording the face at `side` px gives (INTER_AREA)."""
    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in hr])


def bicubic_to(images: np.ndarray, side: int) -> np.ndarray:
    return np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_CUBIC) for im in images])


def model_route(backend, native: np.ndarray) -> np.ndarray:
    """Native RGB uint8 faces -> the model's output, uint8 RGB, exactly as the runtime prepares a crop."""
    from runtime.backends import infer_batched
    from runtime.faces import resize_crop
    from runtime.frames import hwc_uint8_to_nchw
    from training.metrics import to_uint8

    artifact = backend.artifact
    if artifact.tiling is not None:
        return tiled_route(backend, native)
    small = np.stack([resize_crop(im, artifact.input_hw) for im in native])
    return to_uint8(infer_batched(backend, hwc_uint8_to_nchw(small))[artifact.image_output.name])


def tiled_route(backend, native: np.ndarray) -> np.ndarray:
    """A tiled model (`runtime.tiles`) enhances each face at its recorded size (scale x native px; a face smaller
    than the input gets its edge pixels as context), then the result is brought to the output size."""
    from runtime.faces import FaceJob, Square
    from runtime.pipeline import enhance_tiled

    side = native.shape[1]
    square = Square(0, 0, side)
    faces = [(np.ascontiguousarray(im[..., ::-1]), FaceJob(0, (0, 0, side, side), square, im)) for im in native]
    out_side = backend.artifact.output_hw[0]

    def to_output(sr):
        filter_ = cv2.INTER_AREA if sr.shape[0] > out_side else cv2.INTER_CUBIC
        return cv2.resize(sr, (out_side, out_side), interpolation=filter_)[..., ::-1]

    return np.stack([to_output(sr) for _, sr, _ in enhance_tiled(backend, faces)])


def measure(manifest: Path, hr: np.ndarray, sizes=NATIVE_SIZES) -> dict:
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend
    from training.metrics import y_psnr_ssim

    artifact = load_artifact(manifest)
    out_side = artifact.output_hw[0]
    target = bicubic_to(hr, out_side) if out_side != hr.shape[1] else hr
    rows = []
    with create_backend("auto", artifact) as backend:
        for side in sizes:
            native = native_faces(hr, side)
            scores = {"model": model_route(backend, native), "bicubic": bicubic_to(native, out_side)}
            psnr = {k: float(np.mean([y_psnr_ssim(a, b)[0] for a, b in zip(v, target)])) for k, v in scores.items()}
            rows.append({"native_px": side, "model_db": psnr["model"], "bicubic_db": psnr["bicubic"],
                         "gain_db": psnr["model"] - psnr["bicubic"]})
            log.info("%s native %3d px: model %.2f dB, bicubic %.2f dB (%+.2f)", manifest.stem, side,
                     psnr["model"], psnr["bicubic"], psnr["model"] - psnr["bicubic"])
    winning = [r["native_px"] for r in rows if r["gain_db"] > 0]
    return {"artifact": manifest.stem, "input_px": artifact.input_hw[0], "output_px": out_side, "rows": rows,
            "tiled": artifact.tiling is not None, "crossover_px": max(winning) if winning else None,
            "crossover_ratio": round(max(winning) / artifact.input_hw[0], 3) if winning else None}


def run(args) -> dict:
    from training.data import load_split

    split = load_split("test", args.data, cache_dir=args.cache).subset(QUICK_FACES if args.quick else args.limit)
    models = [measure(Path(m), split.hr, args.sizes or NATIVE_SIZES) for m in args.models]
    return {"split": "test", "images": len(split), "models": models}


def to_markdown(payload: dict) -> str:
    lines = [f"# Crossover — model vs bicubic by native face size, UTK test ({payload['images']} faces)\n",
             f"Command: `{payload['command']}`\n"]
    for model in payload["models"]:
        rows = [[r["native_px"], r["model_db"], r["bicubic_db"], f"{r['gain_db']:+.2f}"] for r in model["rows"]]
        how = ", tiled at the recorded size" if model.get("tiled") else ""
        lines.append(f"**{model['artifact']}** ({model['input_px']} -> {model['output_px']} px{how}): model wins up to "
                     f"{model['crossover_px']} px native ({model['crossover_ratio']} x its input)\n")
        lines.append(markdown_table(["native px", "model Y-PSNR (dB)", "bicubic Y-PSNR (dB)", "gain"], rows))
    return "\n".join(lines)


def plot(payload: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for model in payload["models"]:
        ax.plot([r["native_px"] for r in model["rows"]], [r["gain_db"] for r in model["rows"]], marker="o",
                label=model["artifact"])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("native face size (px)")
    ax.set_ylabel("model - bicubic (dB Y-PSNR)")
    ax.legend(fontsize=7)
    return save_figure(fig, ax, path, "Where enhancement stops paying off")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.crossover", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="artifact manifests to measure")
    p.add_argument("--sizes", type=lambda t: tuple(int(v) for v in t.split(",")),
                   help="native face sizes in px, comma-separated (default: 8 ... 96)")
    add_face_split_args(p, QUICK_FACES)
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_and_report("crossover", run, parse_args(argv), to_markdown, plot)


if __name__ == "__main__":
    raise SystemExit(main())
