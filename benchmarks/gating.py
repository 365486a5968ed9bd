"""`python -m benchmarks.gating --model M.json`: are the tracks the runtime keeps faces? Against hand labels.

    python -m benchmarks.gating --model artifacts/pfsr_fp32.json

`tests/data/street_faces.json` labels every YuNet candidate (score >= 0.3) of five frames of the shared street
video as a face or not (the crest above the entrance, hair seen from above, backs of heads). The runtime runs
over the whole video as `python -m runtime.enhance` would, for several track-confirmation settings
(detections needed, mean detector score); at each labelled frame a confirmed face (what the views, crops
and events get) is matched to the labels (IoU >= 0.3). Reported: recall of the labelled faces, the confirmed
tracks that are labelled non-faces (these would get a saved crop), and how many track ids were handed out.
Results: benchmarks/results/<machine>/gating.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2

from .common import markdown_table, run_and_report

log = logging.getLogger("benchmarks.gating")
LABELS = Path(__file__).resolve().parents[1] / "tests" / "data" / "street_faces.json"
SETTINGS = ((1, 0.0), (2, 0.0), (3, 0.0), (2, 0.7), (3, 0.7), (3, 0.72), (3, 0.75), (5, 0.75))
MATCH_IOU = 0.3


def run_setting(backend, detector, frames, labels: dict, hits: int, score: float, detect_every: int) -> dict:
    from runtime.pipeline import EnhanceConfig, Enhancer
    from runtime.track import iou

    config = EnhanceConfig(detect_every=detect_every, show_fps=False, confirm_hits=hits, confirm_score=score)
    enhancer = Enhancer(backend, detector, config)
    found = labelled = 0
    warm_found = warm_labelled = 0  # frames after the first confirmation window (frame 0 cannot be confirmed)
    non_face_tracks, face_tracks, seen_ids = set(), set(), set()
    for index, frame in enumerate(frames):
        faces = enhancer.process(frame, index).faces
        seen_ids.update(face.track_id for face in faces)
        truth = labels["frames"].get(str(index))
        if truth is None:
            continue
        hit = sum(any(iou(face.box, box) >= MATCH_IOU for face in faces) for box in truth["faces"])
        labelled, found = labelled + len(truth["faces"]), found + hit
        if index >= (hits - 1) * detect_every:
            warm_labelled, warm_found = warm_labelled + len(truth["faces"]), warm_found + hit
        for face in faces:
            if any(iou(face.box, box) >= MATCH_IOU for box in truth["faces"]):
                face_tracks.add(face.track_id)
            elif any(iou(face.box, item["box"]) >= MATCH_IOU for item in truth["not_faces"]):
                non_face_tracks.add(face.track_id)
    return {"confirm_hits": hits, "confirm_score": score, "detect_every": detect_every,
            "recall": found / labelled, "faces_labelled": labelled, "recall_after_warmup": warm_found / warm_labelled,
            "non_face_tracks": len(non_face_tracks - face_tracks), "track_ids": len(seen_ids)}


def run(args) -> dict:
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend
    from runtime.detect import FaceDetector
    from runtime.shared_data import MISSING_HINT, shared_dir

    root = shared_dir()
    if root is None:
        raise SystemExit(f"the shared street video is needed ({MISSING_HINT})")
    labels = json.loads(LABELS.read_text())
    capture = cv2.VideoCapture(str(root / labels["video"]))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    detector = FaceDetector(args.detector_model or root / "models" / "face_detection_yunet_2023mar.onnx")
    rows = []
    with create_backend("auto", load_artifact(args.model)) as backend:
        for detect_every in args.detect_every:
            for hits, score in SETTINGS:
                rows.append(run_setting(backend, detector, frames, labels, hits, score, detect_every))
                log.info("%s", rows[-1])
    return {"labels": str(LABELS.name), "frames": len(frames), "rows": rows}


def to_markdown(payload: dict) -> str:
    rows = [[r["detect_every"], r["confirm_hits"], r["confirm_score"], f"{r['recall_after_warmup']:.3f}",
             f"{r['recall']:.3f}", r["non_face_tracks"], r["track_ids"]] for r in payload["rows"]]
    return (f"# Face gating on the street video against hand labels ({payload['labels']})\n\n"
            f"Command: `{payload['command']}`\n\n"
            + markdown_table(["detect every", "confirm after hits", "min mean score",
                              "recall (frames after confirmation)", "recall (all 5 frames)",
                              "confirmed non-face tracks", "track ids"], rows)
            + "\nA track needs `hits` detection rounds before it is confirmed, so labelled frames earlier than that "
              "(frame 0) cannot have confirmed faces; the first recall column leaves them out.\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gating", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="an artifact (faces are not enhanced at --upscale 1: any model)")
    p.add_argument("--detect-every", type=lambda t: [int(v) for v in t.split(",")], default=[1, 3])
    p.add_argument("--detector-model", help="YuNet ONNX (default: ../shared/models/...)")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    return run_and_report("gating", run, p.parse_args(argv), to_markdown)


if __name__ == "__main__":
    raise SystemExit(main())
