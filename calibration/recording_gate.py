"""`python -m calibration.recording_gate`: fit the per-face gate between clean and camera-grade weights.

    python -m calibration.recording_gate --model pfsr                       # the shipped pair, report only
    python -m calibration.recording_gate --model pfsr --write               # ... and store it in the weights
    python -m calibration.recording_gate --model dic --clean W1 --camera W2 --limit 300

The validation faces are recorded at each degradation level of `training.degrade` (clean, camera, heavy; fixed
seeds), both weights enhance them, and a logistic model of the faces' `runtime.recording` features learns where
the camera-grade weights give the higher Y-PSNR; its threshold is the one with the best mean gain over the levels
that costs clean faces at most MAX_CLEAN_LOSS_DB (`pick_threshold` says why). Its quality is reported on held-out faces (the second half of
each level): mean gain over bicubic of the clean weights, the camera-grade weights and the gated pair, and the
share of faces below bicubic. `--write` refits on all faces and stores the gate in the camera-grade weights'
metadata (`recording_gate`; the tensors are not touched), from where `export.build` copies it into the manifest.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from runtime.files import atomic_path
from runtime.recording import RecordingGate, fit_gate, recording_features

log = logging.getLogger("calibration.recording_gate")
LEVELS = ("clean", "camera", "heavy")
DEFAULT_FACES = 300
MAX_CLEAN_LOSS_DB = 0.1  # what the gate may cost clean faces (see pick_threshold)
THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def measure(model_name: str, clean_weights: Path, camera_weights: Path, faces: int, data=None, cache=None) -> dict:
    """Per level: LR faces' gate features and both weights' gains over bicubic."""
    from models import create_model, model_io
    from training.data import load_split
    from training.evaluate import per_face_psnr, record_faces, super_resolve, upscale_bicubic

    clean, camera = create_model(model_name, weights=clean_weights), create_model(model_name, weights=camera_weights)
    size = model_io(model_name, clean.config).input_size
    hr = load_split("val", data, cache_dir=cache).subset(faces).hr
    measured = {}
    for level in LEVELS:  # recorded as benchmarks.camera records the test split (same seeds)
        lr = record_faces(hr, size, level)
        bicubic = per_face_psnr(upscale_bicubic(lr, hr.shape[1]), hr)
        measured[level] = {"features": np.stack([recording_features(face[..., ::-1], size) for face in lr]),
                           "clean": per_face_psnr(super_resolve(clean, lr), hr) - bicubic,
                           "camera": per_face_psnr(super_resolve(camera, lr), hr) - bicubic}
        log.info("%s: clean weights %+.2f dB, camera-grade %+.2f dB over bicubic", level,
                 measured[level]["clean"].mean(), measured[level]["camera"].mean())
    return {"size": size, "levels": measured}


def fit(measured: dict, part: slice = slice(None), fitted_on: str = "") -> RecordingGate:
    """The gate fitted on `part` of each level's faces, its threshold set by `pick_threshold` on them."""
    levels = measured["levels"].values()
    features = np.concatenate([m["features"][part] for m in levels])
    advantage = np.concatenate([m["camera"][part] - m["clean"][part] for m in levels])
    gate = fit_gate(features, advantage, measured["size"], fitted_on)
    return replace(gate, threshold=pick_threshold(gate, measured, part))


def gated_gains(gate: RecordingGate, level: dict, part: slice, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(gain over bicubic of the gated pair, faces sent to the twin) for one level's measured faces."""
    to_camera = gate.scores(level["features"][part]) >= threshold
    return np.where(to_camera, level["camera"][part], level["clean"][part]), to_camera


def pick_threshold(gate: RecordingGate, measured: dict, part: slice) -> float:
    """The threshold that gives the best mean gain over the levels while clean faces lose at most
    MAX_CLEAN_LOSS_DB against the clean weights alone. Why the cap: the synthetic clean faces (PIL bicubic of a
    sharp photo) are sharper than any camera's, so real footage looks less clean to the gate than it is: on the
    street video (`benchmarks.street`) a gate at 0.5 sent 351 of 534 faces to the twins and the faces lost 0.33 dB
    against the clean weights alone."""
    levels = measured["levels"]
    clean_alone = levels["clean"]["clean"][part].mean()
    best = (-np.inf, 0.5)
    for threshold in THRESHOLDS:
        means = [gated_gains(gate, level, part, threshold)[0].mean() for level in levels.values()]
        clean_loss = clean_alone - gated_gains(gate, levels["clean"], part, threshold)[0].mean()
        if clean_loss <= MAX_CLEAN_LOSS_DB:
            best = max(best, (float(np.mean(means)), threshold))
    return float(best[1] if np.isfinite(best[0]) else THRESHOLDS[-1])


def held_out_report(measured: dict) -> list[dict]:
    """Fit on the first half of each level's faces, score the gated pair on the second half."""
    half = len(next(iter(measured["levels"].values()))["clean"]) // 2
    gate = fit(measured, slice(0, half))
    rows = []
    for level, m in measured["levels"].items():
        gated, to_camera = gated_gains(gate, m, slice(half, None), gate.threshold)
        rows.append({"level": level, "threshold": gate.threshold, "faces": len(gated),
                     "clean_db": float(m["clean"][half:].mean()), "camera_db": float(m["camera"][half:].mean()),
                     "gated_db": float(gated.mean()),
                     "to_camera": float(to_camera.mean()), "gated_below_bicubic": float((gated < 0).mean())})
    return rows


def read_gate(weights: Path) -> RecordingGate | None:
    """The gate `--write` stored in a weights file's metadata, checked; None when it has none. A malformed one
    raises ValueError naming the file."""
    from models.weights import read_metadata

    text = read_metadata(weights).get("recording_gate")
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{weights}: metadata recording_gate is not JSON ({err.msg})") from err
    return RecordingGate.from_dict(data, f"{weights}: metadata recording_gate")


def tensor_digest(weights: Path) -> str:
    """sha256 of a safetensors file's tensors (names, dtypes, shapes, bytes), not of its metadata: what the gate
    was fitted for, unchanged by writing the gate itself into the file."""
    import hashlib

    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(weights), framework="numpy") as f:
        for key in sorted(f.keys()):
            tensor = f.get_tensor(key)
            digest.update(f"{key}:{tensor.dtype}:{tensor.shape}".encode())
            digest.update(tensor.tobytes())
    return digest.hexdigest()


def write_gate(weights: Path, gate: RecordingGate) -> None:
    """Store the gate in the safetensors metadata, tensors unchanged (byte for byte)."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(weights), framework="numpy") as f:
        metadata = dict(f.metadata() or {})
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    metadata["recording_gate"] = json.dumps(gate.to_dict())
    with atomic_path(weights) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m calibration.recording_gate", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="registry name (pfsr, pfsr_x4, dic)")
    p.add_argument("--clean", type=Path, help="the clean-trained weights (default: the model's shipped default)")
    p.add_argument("--camera", type=Path, help="the camera-grade weights (default: the model's shipped ones)")
    p.add_argument("--limit", type=int, default=DEFAULT_FACES, help="validation faces per level")
    p.add_argument("--write", action="store_true", help="store the gate (fitted on all faces) in --camera's metadata")
    p.add_argument("--data", help="faces-utk folder (default: ../shared/data/faces-utk)")
    p.add_argument("--cache", help="folder for the decoded-split cache")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from models import camera_grade_weights, shipped_weights
    from training.data import DataError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    clean = args.clean or shipped_weights(args.model)
    camera = args.camera or camera_grade_weights(args.model)
    if clean is None or camera is None:
        log.error("%s: no %s weights; pass --clean and --camera", args.model, "clean" if clean is None else "camera-grade")
        return 2
    try:
        measured = measure(args.model, clean, camera, args.limit, args.data, args.cache)
    except DataError as err:
        log.error("%s", err)
        return 2
    for row in held_out_report(measured):
        log.info("held out, %(level)s (%(faces)d faces, threshold %(threshold).2f): clean %(clean_db)+.2f, camera-grade %(camera_db)+.2f, "
                 "gated %(gated_db)+.2f dB over bicubic; %(to_camera).0f%% to camera-grade; gated below bicubic "
                 "%(gated_below_bicubic).0f%%", {**row, "to_camera": 100 * row["to_camera"],
                                                   "gated_below_bicubic": 100 * row["gated_below_bicubic"]})
    if args.write:
        gate = replace(fit(measured, fitted_on=f"val split, first {args.limit} faces at each of "
                                               f"{', '.join(LEVELS)}; clean weights {clean.name}"),
                       fitted_to=(("camera", tensor_digest(camera)), ("clean", tensor_digest(clean))))
        write_gate(camera, gate)
        log.info("gate written to %s: %s", camera, json.dumps(gate.to_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
