"""`python -m benchmarks.street`: the README tour scored against the real 1080p frames.

    python -m benchmarks.street --models artifacts/pfsr_fp32.json artifacts/pfsr_x4_fp32.json
    python -m benchmarks.street --models ... --compare-camera-grade        # with and without the twins

The 1080p street video is resized to `--input-width` (INTER_AREA, as the CLI's --input-width) and run through the
runtime at `--upscale` (the overlay view, as `python -m runtime.enhance` shows it). For every enhanced face, the
square it was enhanced in, scaled back to 1080p, is cut from the output, from bicubic of the small frame and from
the real 1080p frame: Y-PSNR of each against the real frame, and the gain over bicubic with a 95 % bootstrap
interval over faces. The real frame is H.264 from a camera too, so this is "closer to a better camera", not
"closer to the face".
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import cv2
import numpy as np

from .common import command_line, machine_info, markdown_table, write_results
from .frames import region_psnr, y_channel

log = logging.getLogger("benchmarks.street")
VIDEO = "data/scenes/street-video-1080p.mp4"


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    """Y-PSNR of two BGR crops, as benchmarks.frames scores face regions."""
    return region_psnr(y_channel(image), y_channel(truth), np.ones(image.shape[:2], bool))


def score_run(video: Path, models: list[str], camera_grade: bool, args) -> dict:
    """Per enhanced face: the output's and bicubic's Y-PSNR against the real frame."""
    from runtime.api import FaceSR
    from runtime.outputs import NullSink
    from runtime.routing import CAMERA_GRADE
    from runtime.run import Lane, frames_inline
    from runtime.sources import SourceOptions, open_source

    originals = cv2.VideoCapture(str(video))
    faces, twin_faces, seen = [], 0, 0
    with FaceSR(models, upscale=args.upscale, detector=args.detector_model, camera_grade=camera_grade) as sr, \
            open_source(str(video), SourceOptions(input_width=args.input_width)) as frames:
        for result in frames_inline(Lane(frames, NullSink(), sr._enhancer(photos=False)), args.frames):
            ok, truth = originals.read()
            if not ok:
                break
            small = result.frame
            bicubic = cv2.resize(small, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_CUBIC)
            view = cv2.resize(result.view, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_CUBIC) \
                if result.view.shape[:2] != truth.shape[:2] else result.view
            scale = truth.shape[1] / small.shape[1]
            seen += len(result.faces)
            for face in result.faces:
                if face.sr is None:
                    continue
                x0, y0 = max(0, round(face.square.x * scale)), max(0, round(face.square.y * scale))
                x1 = min(truth.shape[1], round((face.square.x + face.square.side) * scale))
                y1 = min(truth.shape[0], round((face.square.y + face.square.side) * scale))
                if x1 - x0 < 8 or y1 - y0 < 8:
                    continue
                cut = (slice(y0, y1), slice(x0, x1))
                faces.append((psnr(view[cut], truth[cut]), psnr(bicubic[cut], truth[cut])))
                twin_faces += face.route == CAMERA_GRADE
    originals.release()
    scores = np.array(faces).reshape(-1, 2)
    return {"camera_grade": camera_grade, "faces": seen, "enhanced": len(scores),
            "enhanced_by_twin": twin_faces, "psnr": scores[:, 0].tolist(), "bicubic_psnr": scores[:, 1].tolist()}


def summarize(run: dict, seed: int = 0) -> dict:
    gains = np.array(run["psnr"]) - np.array(run["bicubic_psnr"])
    if not len(gains):
        return {"gain_db": None}
    rng = np.random.default_rng(seed)
    means = [rng.choice(gains, len(gains)).mean() for _ in range(2000)]
    return {"gain_db": float(gains.mean()), "gain_low": float(np.percentile(means, 2.5)),
            "gain_high": float(np.percentile(means, 97.5)), "below_bicubic": float(np.mean(gains < 0)),
            "worst_db": float(gains.min())}


def to_markdown(payload: dict) -> str:
    rows = []
    for run in payload["runs"]:
        s = run["summary"]
        gain = "-" if s["gain_db"] is None else f"{s['gain_db']:+.2f} [{s['gain_low']:+.2f}, {s['gain_high']:+.2f}]"
        below = "-" if s["gain_db"] is None else f"{s['below_bicubic']:.1%}"
        rows.append(["with twins" if run["camera_grade"] else "--no-camera-grade", run["faces"], run["enhanced"],
                     run["enhanced_by_twin"], gain, below])
    return (f"# Street video as a {payload['input_width']} px camera, shown {payload['upscale']:g}x, against the "
            f"real 1080p frames\n\nCommand: `{payload['command']}`  \nModels: {', '.join(payload['models'])}\n\n"
            + markdown_table(["run", "faces", "enhanced", "by the camera-grade twin", "over bicubic (dB, 95 % CI)",
                              "below bicubic"], rows))


def main(argv=None) -> int:
    from runtime.shared_data import MISSING_HINT, shared_dir

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="python -m benchmarks.street", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="artifact manifests (as --model of runtime.enhance)")
    p.add_argument("--compare-camera-grade", action="store_true", help="run with and without the camera-grade twins")
    p.add_argument("--input-width", type=int, default=480)
    p.add_argument("--upscale", type=float, default=4.0)
    p.add_argument("--frames", type=int, help="at most this many frames (default all)")
    p.add_argument("--detector-model", help="YuNet ONNX (default: ../shared/models/...)")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    args = p.parse_args(argv)
    root = shared_dir()
    if root is None:
        log.error("the shared street video is needed (%s)", MISSING_HINT)
        return 2
    args.detector_model = args.detector_model or str(root / "models" / "face_detection_yunet_2023mar.onnx")
    runs = []
    for camera_grade in ((True, False) if args.compare_camera_grade else (True,)):
        run = score_run(root / VIDEO, args.models, camera_grade, args)
        run["summary"] = summarize(run)
        runs.append(run)
    payload = {"command": command_line(), "machine": machine_info(), "models": args.models,
               "input_width": args.input_width, "upscale": args.upscale, "runs": runs}
    write_results("street", payload, to_markdown(payload), args.outdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
