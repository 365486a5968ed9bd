"""`python -m calibration.collect`: LR calibration inputs, made exactly as the runtime makes them.

Sources:
- `faces-utk[:split]` (default split train): aligned crops, pair convention (training.data.decode_pair).
- an image folder or a video file: faces found by YuNet (cv2.FaceDetectorYN), framed with the runtime's
  square (runtime.faces.square_around: runtime.constants.FRAMING_SCALE / FRAMING_OFFSET), cropped,
  resized to 16x16 with INTER_AREA, BGR -> RGB, [0, 1] (runtime.faces.resize_crop / to_model_input).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from runtime.frames import hwc_uint8_to_nchw
from runtime.shared_data import MISSING_HINT, shared_dir, split_names, utk_dir

from . import (
    DEFAULT_COUNT, DEFAULT_INPUT_SIZE, DEFAULT_SOURCE, MIN_COUNT, CalibrationError, check_array, content_hash, save_set,
)

log = logging.getLogger("calibration.collect")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def collect(source: str, count: int = DEFAULT_COUNT, detector_model: str | None = None,
            frame_step: int = 1, input_size: int = DEFAULT_INPUT_SIZE) -> tuple[np.ndarray, str]:
    """Up to `count` LR inputs [N,3,S,S] (S = the model's declared input size) float32 RGB in [0,1] from
    `source`, and a description."""
    if count < 1:
        raise CalibrationError(f"--count {count}: expected a positive number of faces (default {DEFAULT_COUNT})")
    if source.startswith("faces-utk"):
        return _from_utk(source, count, input_size)
    path = Path(source)
    if path.is_dir():
        frames = _image_frames(path)
    elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        frames = _video_frames(path, frame_step)
    else:
        raise CalibrationError(f"--source {source!r}: expected faces-utk[:train|val|test], an image folder or a "
                               f"video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return _from_frames(frames, count, _detector(detector_model), f"{path.name}", input_size)


def default_set(count: int = DEFAULT_COUNT, input_size: int = DEFAULT_INPUT_SIZE) -> tuple[dict, str]:
    """The default calibration set, built in memory: `count` faces of the UTK train split."""
    lr, source = collect(DEFAULT_SOURCE, count, input_size=input_size)
    lr = check_array(lr)
    sha = content_hash(lr)
    return {"lr": lr, "sha256": sha, "source": source}, f"{source} ({len(lr)} faces, sha256 {sha[:12]})"


def _from_utk(source: str, count: int, input_size: int) -> tuple[np.ndarray, str]:
    from training.data import decode_pair

    split = source.partition(":")[2] or "train"
    faces = utk_dir()
    if faces is None:
        raise CalibrationError(f"faces-utk not found ({MISSING_HINT}), or pass --source with an image folder or "
                               "video")
    try:
        names = split_names(faces, split, count)
    except ValueError as err:
        raise CalibrationError(f"--source {source!r}: {err}") from err
    lr = hwc_uint8_to_nchw(np.stack([decode_pair(faces / "images" / n, input_size)[1] for n in names]))
    return lr, f"faces-utk/{split}[:{len(names)}] (pair convention: PIL bicubic 200->128->{input_size})"


def _detector(model: str | None):
    try:
        from runtime.detect import FaceDetector
    except ImportError as err:
        raise CalibrationError(f"face sources need the runtime package (runtime.detect): {err}") from err
    if model is None:
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


def _from_frames(frames, count: int, detector, name: str, input_size: int) -> tuple[np.ndarray, str]:
    from runtime.constants import FRAMING_OFFSET, FRAMING_SCALE
    from runtime.detect import box_size
    from runtime.faces import crop_square, resize_crop, square_around, to_model_input

    crops, n_frames = [], 0
    for frame in frames:
        n_frames += 1
        for det in detector.detect(frame):
            if box_size(det.box) < input_size:  # smaller faces carry no detail at the model's input size
                continue
            crops.append(resize_crop(crop_square(frame, square_around(det.box)), (input_size, input_size)))
            if len(crops) >= count:
                break
        if len(crops) >= count:
            break
    if not crops:
        raise CalibrationError(f"--source {name}: no faces of >= {input_size} px found in {n_frames} frames")
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
    p.add_argument("--input-size", type=int, default=DEFAULT_INPUT_SIZE,
                   help=f"the model's declared LR input side in px (default {DEFAULT_INPUT_SIZE})")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        for flag, value in (("--min-count", args.min_count), ("--frame-step", args.frame_step),
                            ("--input-size", args.input_size)):
            if value < 1:
                raise CalibrationError(f"{flag} {value}: expected a positive integer")
        lr, source = collect(args.source, args.count, args.detector_model, args.frame_step, args.input_size)
        meta = save_set(args.out, lr, source, min_count=args.min_count)
    except CalibrationError as err:
        log.error("%s", err)
        return 2
    print(f"calibration set: {args.out}: {meta['count']} faces, sha256 {meta['sha256']}")
    print(f"source: {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
