"""`python -m benchmarks.camera`: do the models beat bicubic on what cameras deliver, and keep the person?

    python -m benchmarks.camera --quick                                  # 50 faces, camera level, PSNR only
    python -m benchmarks.camera --levels clean,camera,heavy --framings aligned,loose --identity --limit 300
    python -m benchmarks.camera --weights pfsr=runs/pfsr_camera/best.safetensors   # add or compare weights

For each framing and degradation level the UTK test faces' LR is recorded by the simulated camera
(`training.degrade`, a fixed seed per level: every method sees the same pixels; `clean` is the pair convention,
PIL bicubic), then upscaled by bicubic and by each model (PyTorch, last step) and scored against the HR:
Y-PSNR (the official metric) and its gain over bicubic of the same LR, with a 95 % bootstrap interval over
faces. `--identity` adds dlib's face descriptor (`benchmarks.identity`): mean distance to the HR face and
rank-1 identification among the set, each against bicubic. Framings: `aligned` (UTK's tight crops) and
`loose` (zoomed out 1.35x, about FFHQ's framing; the crop's edges are reflected).

`--burst N` films each face in a burst of N frames instead (a still camera shaking by up to half a pixel, its
noise and codec quality new in every frame: `training.burst`) and fuses them as `--fuse-frames N` does: the
models read the fused face, and every gain is over bicubic of the current frame, which is what a run without
fusion shows. The fused-grade twins (`models.fused_grade_weights`) are scored too. The camera-grade gate reads the
current frame, as the runtime's does.
"""
from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import add_face_split_args, markdown_table, run_and_report

log = logging.getLogger("benchmarks.camera")
QUICK_FACES = 50
LOOSE_ZOOM = 1.35
DEFAULT_MODELS = ("pfsr", "pfsr_x4", "dic")


@dataclass(frozen=True)
class Candidate:
    """Weights to score; with `twin` (camera-grade weights carrying a `runtime.recording` gate, or the
    fused-grade twin with the camera-grade gate `gate_from`), each face goes to `weights` or `twin` as the gate
    decides on its recorded pixels: the default export as the runtime runs it."""

    label: str
    model: str
    weights: Path
    twin: Path | None = None
    gate_from: Path | None = None  # the weights whose gate picks (default: `twin`; the fused-grade twin has none)


@dataclass
class FaceSet:
    """HR faces [N, 128, 128, 3] with their landmark boxes, and LR inputs by size."""

    hr: np.ndarray
    boxes: np.ndarray
    lr: dict[int, np.ndarray]


def frame_faces(hr: np.ndarray, landmarks: np.ndarray, framing: str) -> tuple[np.ndarray, np.ndarray]:
    from training.augment import crop_square

    if framing == "aligned":
        return hr, landmarks
    if framing != "loose":
        raise ValueError(f"unknown framing {framing!r}; expected aligned or loose")
    pairs = [crop_square(face, points, LOOSE_ZOOM) for face, points in zip(hr, landmarks)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def gated(clean_sr: np.ndarray, twin_sr: np.ndarray, recorded: np.ndarray, gate, twin_name: str) -> np.ndarray:
    """Per face, the twin's output where its gate prefers it on the RGB recorded face, else the clean weights'."""
    to_twin = np.array([gate.prefers_camera(face[..., ::-1]) for face in recorded])
    log.info("gate: %d of %d faces to %s", to_twin.sum(), len(recorded), twin_name)
    return np.where(to_twin[:, None, None, None], twin_sr, clean_sr)


def candidates(args) -> list[Candidate]:
    from calibration.recording_gate import read_gate
    from models import camera_grade_weights, fused_grade_weights, shipped_weights

    found = []
    for name in args.models:
        weights = shipped_weights(name)
        if weights is None:
            log.info("%s: no shipped weights, skipped", name)
            continue
        found.append(Candidate(f"{name} ({weights.stem})", name, weights))
        twin = camera_grade_weights(name)
        if twin is not None and read_gate(twin) is not None:
            found.append(Candidate(f"{name} (default export: {weights.stem} + {twin.stem}, gated)", name, weights,
                                   twin))
        fused = fused_grade_weights(name) if args.burst else None
        if fused is not None:
            found.append(Candidate(f"{name} (fused-grade twin: {fused.stem})", name, fused))
            if twin is not None:  # as the runtime runs fused faces: the camera-grade gate picks default or fused
                found.append(Candidate(f"{name} (default export, fusing: {weights.stem} + {fused.stem}, gated)",
                                       name, weights, fused, gate_from=twin))
    for spec in args.weights:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--weights {spec!r}: expected MODEL=PATH")
        found.append(Candidate(f"{name} ({Path(path).stem})", name, Path(path)))
    return found


def run_camera(args) -> dict:
    from calibration.recording_gate import read_gate
    from models import create_model, model_io
    from training.data import load_split
    from training.evaluate import super_resolve, upscale_bicubic

    count = QUICK_FACES if args.quick else args.limit
    split = load_split("test", args.data, cache_dir=args.cache).subset(count)
    describer = _describer(args.identity)
    models = [(c, create_model(c.model, weights=c.weights)) for c in candidates(args)]
    twins = {c.twin: (create_model(c.model, weights=c.twin), read_gate(c.gate_from or c.twin))
             for c, _ in models if c.twin}
    sizes = {model_io(c.model, m.config).input_size for c, m in models}
    rows = []
    for framing in args.framings:
        hr, landmarks = frame_faces(split.hr, split.landmarks, framing)
        gallery = describer.describe(hr, _boxes(landmarks, hr)) if describer else None
        for level in args.levels:
            recorded, lr = {}, {}  # per input size: the current frame, and what the models read
            for size in sizes:
                recorded[size], lr[size] = recordings(hr, size, level, args.burst)
            for size in sorted(sizes):
                reference = _scores(upscale_bicubic(recorded[size], hr.shape[1]), hr, landmarks, describer, gallery)
                rows.append(_row(framing, level, f"bicubic from {size} px", reference, None))
                for candidate, model in models:
                    if model_io(candidate.model, model.config).input_size != size:
                        continue
                    sr = super_resolve(model, lr[size])
                    if candidate.twin is not None:
                        twin, gate = twins[candidate.twin]
                        sr = gated(sr, super_resolve(twin, lr[size]), recorded[size], gate, candidate.twin.stem)
                    scores = _scores(sr, hr, landmarks, describer, gallery)
                    rows.append(_row(framing, level, candidate.label, scores, reference))
                    log.info("%s %s %s: %+.2f dB over bicubic", framing, level, candidate.label,
                             rows[-1]["gain_db"])
    return {"split": "test", "images": len(split), "identity": describer is not None, "burst": args.burst,
            "rows": rows}


def recordings(hr: np.ndarray, size: int, level: str, burst: int) -> tuple[np.ndarray, np.ndarray]:
    """(the recorded current frame, what the models read): the same faces, or with `burst` the fused ones."""
    from training.burst import record_burst_set
    from training.evaluate import LEVEL_SEEDS, record_faces

    if burst < 2:
        faces = record_faces(hr, size, level)
        return faces, faces
    return record_burst_set(hr, size, level, burst, LEVEL_SEEDS[level])


def _describer(wanted: bool):
    if not wanted:
        return None
    from .identity import FaceDescriber

    return FaceDescriber.load()


def _boxes(landmarks: np.ndarray, hr: np.ndarray) -> np.ndarray:
    from .identity import landmark_boxes

    return landmark_boxes(landmarks, hr.shape[1])


def _scores(sr, hr, landmarks, describer, gallery) -> dict:
    from training.evaluate import per_face_psnr

    scores = {"psnr": per_face_psnr(sr, hr)}
    if describer is not None:
        from .identity import identity_scores

        scores["distance"], scores["rank1"] = identity_scores(describer.describe(sr, _boxes(landmarks, hr)), gallery)
    return scores


def _row(framing: str, level: str, method: str, scores: dict, reference: dict | None) -> dict:
    from .identity import paired_bootstrap

    row = {"framing": framing, "level": level, "method": method, "psnr": float(scores["psnr"].mean())}
    if reference is not None:
        row["gain_db"], row["gain_low"], row["gain_high"] = paired_bootstrap(scores["psnr"], reference["psnr"])
        row["worse_than_bicubic"] = float(np.mean(scores["psnr"] < reference["psnr"]))  # share of faces
    if "distance" in scores:
        row["distance"], row["rank1"] = float(scores["distance"].mean()), float(scores["rank1"].mean())
        if reference is not None:
            row["distance_delta"] = paired_bootstrap(scores["distance"], reference["distance"])
            row["rank1_delta"] = paired_bootstrap(scores["rank1"], reference["rank1"])
    return row


def _interval(value: tuple[float, float, float] | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    mean, low, high = value
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def to_markdown(payload: dict) -> str:
    headers = ["framing", "level", "method", "Y-PSNR (dB)", "over bicubic (dB, 95 % CI)", "faces below bicubic"]
    if payload["identity"]:
        headers += ["dlib distance", "minus bicubic (95 % CI)", "rank-1", "minus bicubic (95 % CI)"]
    rows = []
    for r in payload["rows"]:
        gain = (r["gain_db"], r["gain_low"], r["gain_high"]) if "gain_db" in r else None
        below = f"{r['worse_than_bicubic']:.0%}" if "worse_than_bicubic" in r else "-"
        row = [r["framing"], r["level"], r["method"], f"{r['psnr']:.2f}", _interval(gain, 2), below]
        if payload["identity"]:
            row += [f"{r['distance']:.4f}", _interval(r.get("distance_delta"), 4), f"{r['rank1']:.1%}",
                    _interval(r.get("rank1_delta"), 3)]
        rows.append(row)
    burst = payload.get("burst") or 0
    recorded = (f"LR filmed in bursts of {burst} frames by `training.burst` and fused as `--fuse-frames {burst}` "
                "fuses them (seeded per level); the models read the fused face, bicubic upscales the current frame"
                if burst >= 2 else "LR recorded by `training.degrade` (seeded per level; clean = PIL bicubic)")
    return (f"# Camera-grade quality — UTK {payload['split']} split, {payload['images']} faces\n\n"
            f"Command: `{payload['command']}`  \n{recorded}, models in PyTorch (last step), Y-PSNR: BT.601 Y, "
            "uint8, 8-px border. Identity: dlib's "
            "ResNet descriptor, distance to the HR face (lower is better) and rank-1 among the set's HR faces.\n\n"
            + markdown_table(headers, rows))


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.camera", description=__doc__.split("\n")[0])
    p.add_argument("--models", type=lambda s: [m for m in s.split(",") if m], default=list(DEFAULT_MODELS),
                   help=f"models whose shipped weights are scored (default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                   help="also score these weights (repeatable), e.g. pfsr=runs/pfsr_camera/best.safetensors")
    p.add_argument("--levels", type=lambda s: s.split(","), default=["camera"],
                   help="degradation levels, comma-separated: clean,camera,heavy (default camera)")
    p.add_argument("--framings", type=lambda s: s.split(","), default=["aligned"],
                   help="aligned (UTK's crops) and/or loose (zoomed out 1.35x)")
    p.add_argument("--burst", type=int, default=0, metavar="N",
                   help="film each face in a burst of N frames and fuse them as --fuse-frames N does; gains are over "
                        "bicubic of the current frame (default 0: one recording)")
    p.add_argument("--identity", action="store_true", help="dlib descriptor distance and rank-1 (needs dlib-bin)")
    add_face_split_args(p, QUICK_FACES)
    args = p.parse_args(argv)
    from training.degrade import LEVELS

    unknown = [level for level in args.levels if level not in LEVELS]
    if unknown:
        p.error(f"--levels: unknown {', '.join(unknown)}; choose from {', '.join(LEVELS)}")
    return args


def main(argv=None) -> int:
    from .identity import IdentityUnavailable

    args = parse_args(argv)
    try:
        return run_and_report("camera", run_camera, args, to_markdown)
    except IdentityUnavailable as err:
        logging.getLogger("benchmarks").error("--identity: %s", err)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
