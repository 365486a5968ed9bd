"""`python -m calibration.collect`: LR calibration inputs, made exactly as the runtime makes them.

Sources:
- `faces-utk[:split]` (default split train): aligned crops, pair convention (export.inputs.lr_from_crop).
- an image folder or a video file: faces found by YuNet (cv2.FaceDetectorYN), framed with the runtime's
  square (runtime.faces.square_around: runtime.constants.FRAMING_SCALE / FRAMING_OFFSET), cropped,
  resized to 16x16 with INTER_AREA, BGR -> RGB, [0, 1] (runtime.faces.resize_crop / to_model_input).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from . import DEFAULT_COUNT, DEFAULT_SOURCE, MIN_COUNT, CalibrationError, save_set

log = logging.getLogger("calibration.collect")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
MIN_FACE_PX = 16  # smaller detections carry no detail at 16x16


def collect(source: str, count: int = DEFAULT_COUNT, detector_model: str | None = None,
            frame_step: int = 1) -> tuple[np.ndarray, str]:
    """Up to `count` LR inputs [N,3,16,16] float32 RGB in [0,1] from `source`, and a description."""
    if source.startswith("faces-utk"):
        return _from_utk(source, count)
    path = Path(source)
    if path.is_dir():
        frames = _image_frames(path)
    elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        frames = _video_frames(path, frame_step)
    else:
        raise CalibrationError(f"--source {source!r}: expected faces-utk[:train|val|test], an image folder or a "
                               f"video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return _from_frames(frames, count, _detector(detector_model), f"{path.name}")


def _from_utk(source: str, count: int) -> tuple[np.ndarray, str]:
    from export.inputs import lr_from_crop, utk_dir

    split = source.partition(":")[2] or "train"
    faces = utk_dir()
    if faces is None:
        raise CalibrationError("faces-utk not found at ../shared/data/faces-utk; set FSR_SHARED_DIR or pass "
                               "--source with an image folder or video")
    splits = json.loads((faces / "splits.json").read_text())
    if split not in splits:
        raise CalibrationError(f"--source {source!r}: unknown split {split!r}, expected one of {', '.join(splits)}")
    names = splits[split][:count]
    lr = np.stack([lr_from_crop(faces / "images" / n) for n in names]).astype(np.float32)
    return lr, f"faces-utk/{split}[:{len(names)}] (pair convention: PIL bicubic 200->128->16)"


def _detector(model: str | None):
    try:
        from runtime.detect import FaceDetector
    except ImportError as err:
        raise CalibrationError(f"face sources need the runtime package (runtime.detect): {err}") from err
    if model is None:
        from export.inputs import shared_dir

        root = shared_dir()
        model = str(root / "models" / "face_detection_yunet_2023mar.onnx") if root else None
    if model is None or not Path(model).is_file():
        raise CalibrationError(f"YuNet detector not found ({model}); pass --detector-model PATH "
                               "(face_detection_yunet_2023mar.onnx from OpenCV Zoo)")
    try:
        return FaceDetector(model)
    except Exception as err:  # runtime's AssetError, cv2.error
        raise CalibrationError(str(err)) from err


def _image_frames(folder: Path):
    import cv2

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"--source {folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in the folder")
    for file in files:
        frame = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if frame is None:
            log.warning("skipping unreadable image %s", file)
            continue
        yield frame


def _video_frames(path: Path, step: int):
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise CalibrationError(f"--source {path}: OpenCV cannot open this video")
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % step == 0:
                yield frame
            index += 1
    finally:
        cap.release()


def _from_frames(frames, count: int, detector, name: str) -> tuple[np.ndarray, str]:
    from runtime.constants import FRAMING_OFFSET, FRAMING_SCALE
    from runtime.detect import box_size
    from runtime.faces import crop_square, resize_crop, square_around, to_model_input

    crops, n_frames = [], 0
    for frame in frames:
        n_frames += 1
        for det in detector.detect(frame):
            if box_size(det.box) < MIN_FACE_PX:
                continue
            crops.append(resize_crop(crop_square(frame, square_around(det.box)), (16, 16)))
            if len(crops) >= count:
                break
        if len(crops) >= count:
            break
    if not crops:
        raise CalibrationError(f"--source {name}: no faces of >= {MIN_FACE_PX} px found in {n_frames} frames")
    lr = to_model_input(crops)
    return lr, (f"{name}: {len(lr)} faces from {n_frames} frames (YuNet, framing scale {FRAMING_SCALE}, "
                f"offset {tuple(FRAMING_OFFSET)}, INTER_AREA)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m calibration.collect", description=__doc__.split("\n")[0])
    p.add_argument("--source", default=DEFAULT_SOURCE, help="faces-utk[:split] | image folder | video file")
    p.add_argument("--out", required=True, help="output .npz")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT, help=f"max faces (default {DEFAULT_COUNT})")
    p.add_argument("--min-count", type=int, default=MIN_COUNT, help=f"fail below this many (default {MIN_COUNT})")
    p.add_argument("--detector-model", help="YuNet ONNX (default ../shared/models/face_detection_yunet_2023mar.onnx)")
    p.add_argument("--frame-step", type=int, default=1, help="video: use every k-th frame")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        lr, source = collect(args.source, args.count, args.detector_model, max(1, args.frame_step))
        meta = save_set(args.out, lr, source, min_count=args.min_count)
    except CalibrationError as err:
        log.error("%s", err)
        return 2
    print(f"calibration set: {args.out}: {meta['count']} faces, sha256 {meta['sha256']}")
    print(f"source: {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
