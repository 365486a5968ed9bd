"""`python -m benchmarks.frames`: what a user sees: whole frames, downscaled, enhanced by the real runtime.

    python -m benchmarks.frames --models artifacts/pfsr_fp32.json [artifacts/x4.json ...]
    python -m benchmarks.frames --models artifacts/pfsr_fp32.json --quick      # CI
    python -m benchmarks.frames --models artifacts/pfsr_fp32.json --degradation camera   # as a camera records

Each real frame (the shared group photos, street-video frames) is cropped to a multiple of 8, downscaled by
K (1, 2, 4, 8) with INTER_AREA (with `--degradation`, then blurred, noised and compressed as a camera
records it: `training.degrade.degrade_image`, seeded per frame and K), and run through the runtime exactly
as `python -m runtime.enhance --view overlay --upscale K` runs it (detection, tracking, framing, scale
routing, batched SR, feathered paste-back).
The result is compared with the original full-resolution frame, and so is plain bicubic upscaling of the
whole small frame: Y-PSNR (BT.601 Y) inside the face boxes (YuNet on the original frame, score >= 0.9) and
outside every face's framing squares (`runtime.faces.square_around` and `cover_square`), per face-size bucket
(the face's size in the small frame). K = 1 shows that a frame shown at its own size is left as recorded.
Results: benchmarks/results/<machine>/frames.{json,md,png} (frames_camera.* etc. with --degradation).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from .common import markdown_table, pyplot, run_and_report, save_figure

log = logging.getLogger("benchmarks.frames")
FACTORS = (1, 2, 4, 8)
REFERENCE_SCORE = 0.9
PHOTOS = ("data/scenes/group-6faces.jpg", "data/scenes/group-4faces-small.png")
STREET_FRAMES = (0, 52, 104)
BUCKETS = ((0, 12), (12, 16), (16, 24), (24, 32), (32, 48), (48, 10_000))
PSNR_CAP_DB = 100.0


def load_frames(shared: Path, quick: bool) -> list[tuple[str, np.ndarray]]:
    frames = [(Path(name).stem, cv2.imread(str(shared / name))) for name in PHOTOS]
    if not quick:
        capture = cv2.VideoCapture(str(shared / "data/scenes/street-video-1080p.mp4"))
        for index in range(max(STREET_FRAMES) + 1):
            ok, frame = capture.read()
            if ok and index in STREET_FRAMES:
                frames.append((f"street-{index}", frame))
        capture.release()
    return [(name, frame[: frame.shape[0] // 8 * 8, : frame.shape[1] // 8 * 8]) for name, frame in frames]


def y_channel(image_bgr: np.ndarray) -> np.ndarray:
    from training.metrics import rgb_to_y

    return rgb_to_y(image_bgr[..., ::-1])


def region_psnr(a_y: np.ndarray, b_y: np.ndarray, mask: np.ndarray) -> float:
    mse = float(np.mean((a_y[mask] - b_y[mask]) ** 2)) if mask.any() else float("nan")
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * np.log10(255.0**2 / mse))


def _box_mask(shape, box) -> np.ndarray:
    mask = np.zeros(shape[:2], bool)
    x, y, w, h = (round(v) for v in box)
    mask[max(0, y):max(0, y + h), max(0, x):max(0, x + w)] = True
    return mask


def run_runtime(backends, detector_path: Path, small: np.ndarray, factor: int) -> np.ndarray:
    """The runtime's overlay view of `small` at --upscale factor, set up as the CLI sets it up."""
    from runtime.detect import FaceDetector
    from runtime.pipeline import EnhanceConfig, Enhancer
    from runtime.routing import default_min_face

    min_face = default_min_face([b.artifact for b in backends])
    detector = FaceDetector(detector_path, min_face_px=min_face)
    config = EnhanceConfig(view="overlay", upscale=float(factor), min_face=min_face, show_fps=False)
    return Enhancer(backends, detector, config).process(small, 0).view


def record_small(frame: np.ndarray, factor: int, level: str, seed: int) -> np.ndarray:
    """The frame as a camera K times further away records it: area-downscaled, then the level's degradation."""
    from training.degrade import LEVELS, degrade_image

    small = cv2.resize(frame, (frame.shape[1] // factor, frame.shape[0] // factor), interpolation=cv2.INTER_AREA)
    if level == "clean":
        return small
    rng = np.random.default_rng(seed)
    rgb = degrade_image(np.ascontiguousarray(small[..., ::-1]), LEVELS[level].params(rng), rng)
    return np.ascontiguousarray(rgb[..., ::-1])


def evaluate_frame(name: str, frame: np.ndarray, backends, detector_path: Path, reference_detector,
                   level: str = "clean", seed: int = 0) -> list[dict]:
    from runtime.detect import box_size
    from runtime.faces import cover_square, square_around

    faces = [d.box for d in reference_detector.detect(frame) if d.score >= REFERENCE_SCORE]
    outside = np.ones(frame.shape[:2], bool)
    for box in faces:  # neither framing: the training-like square, nor the one of tiled models
        for square in (square_around(box), cover_square(box)):
            outside &= ~_box_mask(frame.shape, (square.x, square.y, square.side, square.side))
    truth_y = y_channel(frame)
    rows = []
    for factor in FACTORS:
        small = record_small(frame, factor, level, seed + factor)
        outputs = {"runtime": run_runtime(backends, detector_path, small, factor),
                   "bicubic": cv2.resize(small, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_CUBIC)}
        ys = {k: y_channel(v) for k, v in outputs.items()}
        for box in faces:
            mask = _box_mask(frame.shape, box)
            rows.append({"frame": name, "K": factor, "region": "face", "native_px": round(box_size(box) / factor, 1),
                         **{f"{k}_db": region_psnr(y, truth_y, mask) for k, y in ys.items()}})
        rows.append({"frame": name, "K": factor, "region": "outside", "native_px": None,
                     **{f"{k}_db": region_psnr(y, truth_y, outside) for k, y in ys.items()}})
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    table = []
    for factor in FACTORS:
        at_k = [r for r in rows if r["K"] == factor]
        for low, high in BUCKETS:
            faces = [r for r in at_k if r["region"] == "face" and low <= r["native_px"] < high]
            if faces:
                table.append(_mean_row(factor, f"faces {low}-{high} px" if high < 10_000 else f"faces >= {low} px",
                                       faces))
        faces = [r for r in at_k if r["region"] == "face"]
        table.append(_mean_row(factor, "all faces", faces))
        table.append(_mean_row(factor, "outside the faces", [r for r in at_k if r["region"] == "outside"]))
    return table


def _mean_row(factor: int, what: str, rows: list[dict]) -> dict:
    runtime_db = float(np.mean([r["runtime_db"] for r in rows]))
    bicubic_db = float(np.mean([r["bicubic_db"] for r in rows]))
    return {"K": factor, "region": what, "count": len(rows), "runtime_db": runtime_db, "bicubic_db": bicubic_db,
            "gain_db": runtime_db - bicubic_db}


def run(args) -> dict:
    from runtime.backends import create_backend, load_models
    from runtime.detect import FaceDetector
    from runtime.shared_data import MISSING_HINT, shared_dir

    root = shared_dir()
    if root is None:
        raise SystemExit(f"the shared scenes are needed ({MISSING_HINT})")
    detector_path = Path(args.detector_model or root / "models" / "face_detection_yunet_2023mar.onnx")
    reference_detector = FaceDetector(detector_path, max_side=100_000)  # faces of the original, full resolution
    artifacts = load_models(args.models, args.camera_grade)  # as the CLI loads them
    backends = [create_backend("auto", a, self_ensemble=args.self_ensemble).activate() for a in artifacts]
    try:
        rows = []
        for index, (name, frame) in enumerate(load_frames(root, args.quick)):
            rows += evaluate_frame(name, frame, backends, detector_path, reference_detector, args.degradation,
                                   seed=100 * index)
            log.info("%s done", name)
    finally:
        for backend in backends:
            backend.deactivate()
    return {"models": [str(a.path) for a in artifacts], "self_ensemble": args.self_ensemble,
            "degradation": args.degradation, "rows": rows, "summary": summarize(rows)}


def to_markdown(payload: dict) -> str:
    rows = [[r["K"], r["region"], r["count"], r["runtime_db"], r["bicubic_db"], f"{r['gain_db']:+.2f}"]
            for r in payload["summary"]]
    mirrored = ", mirror self-ensemble" if payload.get("self_ensemble") else ""
    level = payload.get("degradation", "clean")
    recorded = "" if level == "clean" else f", recorded with {level} degradation"
    return (f"# Whole frames — runtime overlay vs bicubic{mirrored}{recorded}, against the original frame\n\n"
            f"Command: `{payload['command']}`  \nModels: {', '.join(payload['models'])}\n\n"
            + markdown_table(["K", "region", "n", "runtime Y-PSNR (dB)", "bicubic Y-PSNR (dB)", "gain"], rows))


def plot(payload: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for what in ("all faces", "outside the faces"):
        points = [(r["K"], r["gain_db"]) for r in payload["summary"] if r["region"] == what]
        ax.plot(*zip(*points), marker="o", label=what)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("downscale factor K (= --upscale)")
    ax.set_ylabel("runtime - bicubic (dB Y-PSNR)")
    ax.legend(fontsize=7)
    return save_figure(fig, ax, path, "Whole frames: gain over bicubic")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frames", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="artifact manifests (as --model of runtime.enhance)")
    p.add_argument("--no-camera-grade", dest="camera_grade", action="store_false",
                   help="without the camera-grade twins the manifests name (as the CLI's --no-camera-grade)")
    p.add_argument("--quick", action="store_true", help="the two group photos only")
    p.add_argument("--detector-model", help="YuNet ONNX (default: ../shared/models/...)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="as runtime.enhance --self-ensemble (results: frames_mirror.*)")
    p.add_argument("--degradation", default="clean", choices=("clean", "camera", "heavy"),
                   help="record the downscaled frames as a camera would (training.degrade; default clean)")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    args = p.parse_args(argv)
    kind = "frames" + ("_mirror" if args.self_ensemble else "") + ("" if args.degradation == "clean" else
                                                                  f"_{args.degradation}")
    return run_and_report(kind, run, args, to_markdown, plot)


if __name__ == "__main__":
    raise SystemExit(main())
