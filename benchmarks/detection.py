"""`python -m benchmarks.detection`: YuNet recall by face size, on frames downscaled until faces are tiny.

    python -m benchmarks.detection                       # the shared scene photos and street-video frame 0

Reference faces: YuNet on the full-resolution frame (score >= 0.9, so the reference holds no false
positive). Each frame is downscaled with INTER_AREA by factors 1..12; the runtime's detector then runs on
the small frame as is (detection scale 1) and after upscaling it (bicubic, x2 and x4). A reference face
counts as found when a detection overlaps its scaled box with IoU >= 0.4. Recall is reported per face-size
bucket (the face's box size in the small frame). The smallest size with recall >= 90 % at scale 1 sets
`runtime.constants.DETECT_MIN_FACE_PX`; the upscaled rows show what upscaling before detection recovers.
Results: benchmarks/results/<machine>/detection.{json,md,png}.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from .common import markdown_table, pyplot, run_and_report, save_figure

log = logging.getLogger("benchmarks.detection")
FACTORS = (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 10, 12)
UPSCALES = (1, 2, 4)
BUCKETS = ((4, 8), (8, 10), (10, 12), (12, 14), (14, 16), (16, 20), (20, 24), (24, 32), (32, 48), (48, 1000))
REFERENCE_SCORE = 0.9
MATCH_IOU = 0.4
SCENES = ("data/scenes/group-6faces.jpg", "data/scenes/group-4faces-small.png")


def _frames(shared: Path) -> list[tuple[str, np.ndarray]]:
    frames = [(name, cv2.imread(str(shared / name))) for name in SCENES]
    capture = cv2.VideoCapture(str(shared / "data/scenes/street-video-1080p.mp4"))
    ok, frame = capture.read()
    capture.release()
    return frames + ([("street-video frame 0", frame)] if ok else [])


def _detect(detector, image: np.ndarray, upscale: float) -> list:
    from runtime.detect import scale_box

    if upscale == 1:
        return [d.box for d in detector.detect(image)]
    big = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
    return [scale_box(d.box, 1 / upscale) for d in detector.detect(big)]


def measure(detector, frames) -> list[dict]:
    """One record per (frame, factor, upscale, reference face): its size in the small frame and whether found."""
    from runtime.detect import box_size, scale_box
    from runtime.track import iou

    records = []
    for name, frame in frames:
        reference = [d.box for d in detector.detect(frame) if d.score >= REFERENCE_SCORE]
        for factor in FACTORS:
            small = cv2.resize(frame, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
            truth = [scale_box(b, small.shape[1] / frame.shape[1]) for b in reference]
            for upscale in UPSCALES:
                found = _detect(detector, small, upscale)
                for box in truth:
                    hit = any(iou(box, other) >= MATCH_IOU for other in found)
                    records.append({"frame": name, "factor": factor, "upscale": upscale,
                                    "size_px": round(box_size(box), 1), "found": hit})
    return records


def recall_table(records: list[dict]) -> list[dict]:
    rows = []
    for low, high in BUCKETS:
        row = {"bucket": f"{low}-{high}" if high < 1000 else f">={low}"}
        for upscale in UPSCALES:
            hits = [r["found"] for r in records if r["upscale"] == upscale and low <= r["size_px"] < high]
            row[f"x{upscale}"] = round(float(np.mean(hits)), 3) if hits else None
            row["faces"] = len(hits)
        rows.append(row)
    return rows


def run(args) -> dict:
    from runtime.detect import FaceDetector
    from runtime.shared_data import MISSING_HINT, shared_dir

    root = shared_dir()
    if root is None:
        raise SystemExit(f"the shared scenes are needed ({MISSING_HINT})")
    detector = FaceDetector(args.detector_model or root / "models" / "face_detection_yunet_2023mar.onnx",
                            max_side=100_000)  # no internal downscaling: the scale is what is measured here
    records = measure(detector, _frames(root))
    return {"reference_score": REFERENCE_SCORE, "match_iou": MATCH_IOU, "rows": recall_table(records),
            "faces_per_upscale": len(records) // len(UPSCALES)}


def to_markdown(payload: dict) -> str:
    rows = [[r["bucket"], r["faces"], *(r[f"x{u}"] for u in UPSCALES)] for r in payload["rows"]]
    return (f"# Detection recall by face size (YuNet, scene photos + street frame 0 downscaled)\n\n"
            f"Command: `{payload['command']}`\n\n"
            + markdown_table(["face size in the small frame (px)", "faces", *(f"recall, detect at x{u}"
                                                                              for u in UPSCALES)], rows))


def plot(payload: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = [r["bucket"] for r in payload["rows"]]
    for upscale in UPSCALES:
        ax.plot(labels, [r[f"x{upscale}"] for r in payload["rows"]], marker="o", label=f"detect at x{upscale}")
    ax.set_xlabel("face size (px)")
    ax.set_ylabel("recall")
    ax.legend(fontsize=7)
    return save_figure(fig, ax, path, "YuNet recall by face size")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.detection", description=__doc__.split("\n")[0])
    p.add_argument("--detector-model", help="YuNet ONNX (default: ../shared/models/...)")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    return run_and_report("detection", run, p.parse_args(argv), to_markdown, plot)


if __name__ == "__main__":
    raise SystemExit(main())
