"""`python -m benchmarks.quality`: Y-PSNR / SSIM (official DIC metric) on the UTK test split.

    python -m benchmarks.quality --quick                      # first 50 test faces (CI runs this)
    python -m benchmarks.quality                              # the whole test split (500 faces)
    python -m benchmarks.quality --artifacts artifacts/       # also every exported ONNX in a folder

Rows: bicubic; each shipped model at every unroll step (the quality curve of the steps knob);
each artifact found under --artifacts (e.g. fp32/fp16/int8 exports), run through the runtime's own
backend (TensorRT where an engine and TensorRT are present, else ONNX Runtime). Results: benchmarks/results/<machine>/quality.{json,md,png}.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from .common import add_face_split_args, markdown_table, pyplot, run_and_report, save_figure

log = logging.getLogger("benchmarks.quality")
QUICK_FACES = 50


def evaluate_onnx(manifest_path: Path, split) -> dict:
    """Mean Y-PSNR/SSIM of an exported artifact on a decoded split, through the runtime's backend (auto: the
    engine with TensorRT, else ONNX Runtime on the best provider here); NME when it has a `landmarks` output."""
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend, infer_batched
    from runtime.frames import hwc_uint8_to_nchw
    from training.metrics import landmark_nme, sharpness_ratio, to_uint8, y_psnr_ssim

    artifact = load_artifact(manifest_path)
    manifest = artifact.manifest
    if artifact.input_hw[0] != split.lr.shape[1]:
        raise ValueError(f"{manifest_path.name} takes {artifact.input_hw[0]} px inputs, the split's LR is "
                         f"{split.lr.shape[1]} px")
    with create_backend("auto", artifact) as backend:
        outputs = infer_batched(backend, hwc_uint8_to_nchw(split.lr))
        backend_name = backend.name
    sr = to_uint8(outputs[artifact.image_output.name])
    scores = np.array([y_psnr_ssim(s, h) for s, h in zip(sr, split.hr)])
    landmarks = outputs.get("landmarks")
    nme = None if landmarks is None else float(landmark_nme(landmarks, split.landmarks).mean())
    return {"method": f"onnx {manifest_path.stem}", "model": manifest.model, "steps": manifest.steps or "-",
            "precision": manifest.precision, "backend": backend_name, "psnr": float(scores[:, 0].mean()),
            "ssim": float(scores[:, 1].mean()), "nme": nme, "images": len(split),
            "sharpness": float(np.mean([sharpness_ratio(s, h) for s, h in zip(sr, split.hr)]))}


def shipped_model_rows(model_names: list[str], splits) -> list[dict]:
    from models import create_model, model_io, shipped_weights
    from training.evaluate import evaluate_model

    rows = []
    for name in model_names:
        weights = shipped_weights(name)
        if weights is None:
            log.info("%s: no shipped weights, skipped", name)
            continue
        model = create_model(name, weights=weights)
        split = splits(model_io(name, model.config).input_size)
        for row in evaluate_model(model, split):
            rows.append({**row, "method": f"{name} ({weights.name}) step {row['step']}", "model": name,
                         "precision": "fp32 (torch)"})
    return rows


def run_quality(args) -> dict:
    """Bicubic and every model on the test split; each model gets LR faces at its own input size (16 px for
    the x8 models, 32 px for x4), with a bicubic row for each LR size used."""
    from runtime.artifact import load_artifact
    from training.data import load_split
    from training.evaluate import evaluate_bicubic

    count = QUICK_FACES if args.quick else args.limit
    cache: dict[int, object] = {}

    def splits(lr_size: int):
        if lr_size not in cache:
            cache[lr_size] = load_split("test", args.data, cache_dir=args.cache, lr_size=lr_size).subset(count)
        return cache[lr_size]

    rows = shipped_model_rows(args.models, splits)
    manifests = sorted(p for p in Path(args.artifacts).glob("*.json") if not p.name.endswith(".engine.json")) \
        if args.artifacts else []
    for manifest in manifests:
        rows.append(evaluate_onnx(manifest, splits(load_artifact(manifest).input_hw[0])))
    bicubic = [{**evaluate_bicubic(split), "method": f"bicubic from {size} px"} for size, split in sorted(cache.items())]
    return {"split": "test", "images": len(splits(16)), "rows": bicubic + rows}


def to_markdown(payload: dict) -> str:
    headers = ["method", "precision", "steps", "Y-PSNR (dB)", "SSIM", "sharpness", "NME"]
    rows = [[r["method"], r.get("precision", "-"), r.get("step", r.get("steps", "-")), f"{r['psnr']:.2f}",
             f"{r['ssim']:.4f}", f"{r['sharpness']:.3f}", "-" if r.get("nme") is None else f"{r['nme']:.4f}"]
            for r in payload["rows"]]
    return (f"# Quality — UTK {payload['split']} split, {payload['images']} faces\n\n"
            f"Command: `{payload['command']}`  \nMetric: Y-PSNR/SSIM on the BT.601 Y channel of uint8 images, "
            "8-px border cropped (the official DIC metric). Sharpness: mean gradient magnitude of the SR's Y over "
            "the HR's (1 = as much edge energy as the real face). NME: landmarks vs labels / outer-eye distance.\n\n"
            + markdown_table(headers, rows))


def plot(payload: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bicubic = next(r["psnr"] for r in payload["rows"] if r["method"] == "bicubic from 16 px")
    ax.axhline(bicubic, color="grey", linestyle="--", label=f"bicubic from 16 px {bicubic:.2f} dB")
    for model in sorted({r["model"] for r in payload["rows"] if "step" in r}):
        pts = [(r["step"], r["psnr"]) for r in payload["rows"] if r.get("model") == model and "step" in r]
        ax.plot(*zip(*pts), marker="o", label=f"{model} (torch)")
    ax.set_xlabel("unrolled steps")
    ax.set_ylabel("Y-PSNR (dB)")
    ax.legend(fontsize=7)
    return save_figure(fig, ax, path, f"Quality vs steps, UTK test ({payload['images']} faces)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    p.add_argument("--models", type=lambda s: s.split(","),
                   default=["dic", "dicgan", "pfsr", "pfsr_x4", "msfsr", "panini"])
    p.add_argument("--artifacts", help="folder of exported artifacts (manifest .json + .onnx) to evaluate")
    add_face_split_args(p, QUICK_FACES)
    return p.parse_args(argv)


def main(argv=None) -> int:
    return run_and_report("quality", run_quality, parse_args(argv), to_markdown, plot)


if __name__ == "__main__":
    raise SystemExit(main())
