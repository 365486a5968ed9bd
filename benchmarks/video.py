"""`python -m benchmarks.video`: video face SR against ground truth on synthetic cameras, and its flicker.

    python -m benchmarks.video --models artifacts/pfsr_fp32.json artifacts/pfsr_x4_fp32.json
    python -m benchmarks.video --models ... --fuse-frames 0,5 --degradation heavy
    python -m benchmarks.video --models ... --quick          # 8 frames, K = 8, group-6faces, 12 street frames

Synthetic cameras (ground truth known): a shared scene photo is the world. Frame t is the photo shifted by
(dx_t, dy_t) HR pixels (cv2.warpAffine, Lanczos: the ground truth of frame t), recorded by a camera K times
smaller: INTER_AREA downscale, then the camera's degradation (`training.degrade`). Two cameras:
- static: independent sub-pixel jitter of up to +/-`--shake` LR px per axis each frame (`--motion walk`: a
  smooth random walk within the same bound instead), so every frame samples the faces at another phase;
- panning: a steady drift of `--pan` LR px per frame along x (no jitter), centred on the original position.
One camera has one set of optics: its blur, noise kind and level, codec and codec block grid are drawn once
(seeded) from the level (`--draws N`: N cameras per scene, kind and K, their faces pooled); per frame only the
noise itself and the codec's quality (+/-5 around the camera's, as rate control does) change. Every frame is
coded on its own (JPEG, or H.264 as an intra frame).

The real runtime runs on the LR frames as `python -m runtime.enhance --view overlay --upscale K` runs a video
(tracks confirmed after TRACK_CONFIRM_HITS detections), once per method:
- bicubic: the overlay's canvas, INTER_CUBIC of the whole LR frame;
- single: today's single-frame SR;
- fusedN: `EnhanceConfig(fuse_frames=N)` (temporal fusion; only where this checkout's runtime has it).
Scored in the ground-truth face boxes (YuNet on the HR photo, score >= 0.9, moved by each frame's shift):
Y-PSNR per face and frame (frames before a track is confirmed show bicubic and are scored as shown), its gain
over bicubic with a bootstrap 95 % CI over faces, and flicker: the temporal standard deviation of the error
(output - truth, Y) per pixel, taken in scene coordinates (each frame's error map shifted back), averaged
over the face's pixels, over the frames from the first one a track can be confirmed in (frame
TRACK_CONFIRM_HITS - 1: the switch from bicubic to SR at confirmation is a one-off step, not flicker).

Street video (no ground truth): the 1080p street video resized to `--input-width` (INTER_AREA, as the CLI's
--input-width) and shown `--street-upscale` x. Per track, the enhanced face crops of consecutive frames are
registered (cv2.phaseCorrelate on the bicubic crops; the same shifts move every method's crops) and their
temporal standard deviation over sliding windows of 5 frames is averaged: the same face should look the same.
The 1080p recording itself is also given as a reference (Y-PSNR in the same squares).

Results: benchmarks/results/<machine>/video.{json,md,png} and video_faces.png (a face over a few frames:
LR | bicubic | methods | truth); video_clean.* / video_heavy.* for the other levels; --quick runs under
runs/benchmarks-quick/.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import logging
import time
from pathlib import Path

import cv2
import numpy as np

from .common import (RESULTS_ROOT, machine_info, machine_tag, markdown_table, pyplot, results_dir, run_and_report,
                     save_figure)
from .frames import PHOTOS, REFERENCE_SCORE, region_psnr, y_channel

log = logging.getLogger("benchmarks.video")
CAMERAS = ("static", "panning")
FLICKER_WINDOW = 5  # street video: frames per temporal-std window (short: faces turn and walk)
BOOTSTRAP_SAMPLES = 2000
STRIP_FRAMES = 4  # frames shown in the side-by-side picture
STRIP_TILE = 112  # px per tile in it
FACE_STAGES_EXCLUDED = ("decode", "detect", "compose", "encode")  # the rest is per-face work (prepare, fusion, SR)


# --- the synthetic camera -------------------------------------------------------------------------------
def shift_image(image: np.ndarray, dx: float, dy: float, flags: int = cv2.INTER_LANCZOS4) -> np.ndarray:
    """`image` moved by (dx, dy) pixels (content at x lands at x + dx); edges reflected. Lanczos by default:
    the sharpest of OpenCV's filters, so the ground truth loses little detail."""
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, move, (image.shape[1], image.shape[0]), flags=flags,
                          borderMode=cv2.BORDER_REFLECT_101)


def camera_shifts(kind: str, frames: int, factor: int, rng: np.random.Generator, shake: float = 0.5,
                  pan: float = 0.3, motion: str = "jitter") -> np.ndarray:
    """[frames, 2] shifts (dx, dy) in HR pixels. `shake` and `pan` are in LR pixels (x factor in HR)."""
    if kind == "panning":
        dx = pan * factor * (np.arange(frames) - (frames - 1) / 2)
        return np.stack([dx, np.zeros(frames)], axis=1)
    bound = shake * factor
    if motion == "jitter":
        return rng.uniform(-bound, bound, (frames, 2))
    steps = rng.normal(0.0, 0.3 * bound, (frames, 2))  # a random walk, folded back into the bound
    walk = np.cumsum(steps, axis=0)
    return bound - np.abs((walk + bound) % (4 * bound) - 2 * bound)


def camera_settings(level: str, rng: np.random.Generator):
    """One camera's degradation settings (None for clean): drawn once, so its optics stay put."""
    from training.degrade import LEVELS

    return None if level == "clean" else LEVELS[level].params(rng)


def record(scene: np.ndarray, shifts: np.ndarray, factor: int, camera, seed: int):
    """(truth frames, LR frames) of a camera with settings `camera` (None: clean) filming `scene` (BGR, sides
    multiples of `factor`); `seed` seeds each frame's noise and codec quality."""
    from training.burst import frame_settings  # the codec's quality wanders per frame, as in training bursts
    from training.degrade import degrade_image

    size = (scene.shape[1] // factor, scene.shape[0] // factor)
    truths, lows = [], []
    for t, (dx, dy) in enumerate(shifts):
        truth = shift_image(scene, dx, dy)
        low = cv2.resize(truth, size, interpolation=cv2.INTER_AREA)
        if camera is not None:
            rng = np.random.default_rng([seed, t])  # the frame's own noise and codec quality
            low = np.ascontiguousarray(degrade_image(np.ascontiguousarray(low[..., ::-1]),
                                                     frame_settings(camera, rng), rng)[..., ::-1])
        truths.append(truth)
        lows.append(low)
    return truths, lows


# --- metrics --------------------------------------------------------------------------------------------
def moved_box(box, shift) -> tuple[int, int, int, int]:
    """A scene box (x, y, w, h) where frame t shows it, on whole pixels."""
    x, y, w, h = box
    return round(x + shift[0]), round(y + shift[1]), round(w), round(h)


def box_inside(box, shape) -> bool:
    x, y, w, h = box
    return x >= 0 and y >= 0 and x + w <= shape[1] and y + h <= shape[0]


def face_psnr(out_y: np.ndarray, truth_y: np.ndarray, box, shift) -> float:
    """Y-PSNR in the face's box as frame t shows it."""
    x, y, w, h = moved_box(box, shift)
    return region_psnr(out_y[y:y + h, x:x + w], truth_y[y:y + h, x:x + w], np.ones((h, w), bool))


def scene_error(out_y: np.ndarray, truth_y: np.ndarray, shift) -> np.ndarray:
    """The error map (output - truth) moved back to scene coordinates, so a pixel is the same point of the
    face in every frame (cubic: sub-pixel shifts)."""
    error = (out_y - truth_y).astype(np.float32)
    return shift_image(error, -shift[0], -shift[1], cv2.INTER_CUBIC)


def temporal_flicker(errors: np.ndarray) -> float:
    """[T, H, W] error maps -> mean over pixels of the standard deviation over time (0: a steady error)."""
    return float(np.std(np.asarray(errors, np.float64), axis=0).mean())


def bootstrap_ci(values, rng: np.random.Generator, samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """95 % bootstrap interval of the mean of `values` (resampled with replacement)."""
    values = np.asarray(values, np.float64)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


# --- running the runtime --------------------------------------------------------------------------------
class SharedDetections:
    """The detector, remembering its answer per frame content: every method's enhancer sees the same faces
    and tracks, and the detector runs once per frame, not once per method."""

    def __init__(self, detector):
        self.detector = detector
        self.answers: dict[bytes, list] = {}

    def __getattr__(self, name):
        return getattr(self.detector, name)

    def detect(self, frame: np.ndarray) -> list:
        key = hashlib.blake2b(frame.tobytes(), digest_size=16).digest() + bytes(str(frame.shape), "ascii")
        if key not in self.answers:
            self.answers[key] = self.detector.detect(frame)
        return list(self.answers[key])


def fusion_available() -> bool:
    from runtime.pipeline import EnhanceConfig

    return "fuse_frames" in EnhanceConfig.__dataclass_fields__


def method_names(fuse_frames: list[int]) -> list[str]:
    """bicubic, then single (N <= 1) and fusedN per --fuse-frames entry (fused only where the runtime has it)."""
    names = ["bicubic"]
    for n in fuse_frames:
        name = "single" if n <= 1 else f"fused{n}"
        if name.startswith("fused") and not fusion_available():
            log.warning("EnhanceConfig has no fuse_frames in this checkout: %s left out", name)
            continue
        if name not in names:
            names.append(name)
    return names


def make_enhancer(method: str, backends, detector, upscale: float, min_face: float):
    from runtime.constants import TRACK_CONFIRM_HITS, TRACK_CONFIRM_SCORE
    from runtime.pipeline import EnhanceConfig, Enhancer

    options = {"view": "overlay", "upscale": float(upscale), "min_face": min_face, "show_fps": False,
               "confirm_hits": TRACK_CONFIRM_HITS, "confirm_score": TRACK_CONFIRM_SCORE}
    if method.startswith("fused"):
        options["fuse_frames"] = int(method[len("fused"):])
    return Enhancer(backends, detector, EnhanceConfig(**options))


class Methods:
    """One enhancer per method over the same frames (one clip), and what each cost."""

    def __init__(self, names: list[str], backends, detector, upscale: float, min_face: float):
        self.names, self.upscale = names, upscale
        shared = SharedDetections(detector)
        self.enhancers = {m: make_enhancer(m, backends, shared, upscale, min_face) for m in names if m != "bicubic"}
        self.enhanced = dict.fromkeys(self.enhancers, 0)  # faces each method enhanced, over all frames
        self.faces_shown = 0  # faces the runtime tracked, over all frames
        self.bicubic_ms = 0.0
        self.frames = 0

    def run(self, frame: np.ndarray, index: int) -> tuple[dict, dict]:
        """({method: view}, {method: faces}) of one frame."""
        start = time.perf_counter()
        size = (round(frame.shape[1] * self.upscale), round(frame.shape[0] * self.upscale))
        views = {"bicubic": cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)}
        self.bicubic_ms += (time.perf_counter() - start) * 1e3
        faces = {"bicubic": []}
        for name, enhancer in self.enhancers.items():
            result = enhancer.process(frame, index)
            enhancer.timer.frame_done()
            views[name], faces[name] = result.view, result.faces
            self.enhanced[name] += sum(f.sr is not None for f in result.faces)
        self.faces_shown += len(faces[self.names[1]]) if len(self.names) > 1 else 0
        self.frames += 1
        return views, faces

    def costs(self) -> dict:
        """{method: {ms_per_frame, ms_per_face}}: the runtime's stage timer without detection (shared
        here); per face: prepare (+ fusion) and SR over the faces it enhanced. Bicubic: the whole-frame
        resize, shared by the faces in the frame."""
        out = {"bicubic": {"ms_per_frame": self.bicubic_ms / max(1, self.frames),
                           "ms_per_face": self.bicubic_ms / max(1, self.faces_shown)}}
        for name, enhancer in self.enhancers.items():
            stages = {k: v["mean_ms"] * v["frames"] for k, v in enhancer.timer.summary().items()}  # total ms
            face_ms = sum(v for k, v in stages.items() if k not in FACE_STAGES_EXCLUDED)
            out[name] = {"ms_per_frame": sum(v for k, v in stages.items() if k != "detect") / max(1, self.frames),
                         "ms_per_face": face_ms / self.enhanced[name] if self.enhanced[name] else None}
            fusion = getattr(enhancer, "fusion", None)  # how often an earlier window registered and was used
            if fusion is not None:
                out[name]["fusion_windows"] = {"used": fusion.used, "offered": fusion.offered}
        return out


def enhanced_here(faces: list, box_lr) -> bool:
    """Did the runtime enhance the face at `box_lr` (LR pixels) in this frame?"""
    from runtime.track import iou

    return any(f.sr is not None and iou(f.box, box_lr) >= 0.3 for f in faces)


# --- one synthetic camera -------------------------------------------------------------------------------
def evaluate_camera(scene_name: str, scene: np.ndarray, boxes: list, kind: str, factor: int, args, backends,
                    detector, min_face: float, seed: int, keep_strip: bool = False) -> dict:
    """One camera filming one scene, every method scored against the truth. `seed` draws the camera's
    settings (the same for the static and the panning camera of a scene and K: only the motion differs)."""
    from runtime.constants import TRACK_CONFIRM_HITS

    shifts = camera_shifts(kind, args.frames, factor, np.random.default_rng([seed, CAMERAS.index(kind)]),
                           args.shake, args.pan, args.motion)
    camera = camera_settings(args.degradation, np.random.default_rng(seed))
    truths, lows = record(scene, shifts, factor, camera, seed)
    faces = [tuple(map(float, b)) for b in boxes if all(box_inside(moved_box(b, s), scene.shape) for s in shifts)]
    methods = Methods(method_names(args.fuse_frames), backends, detector, factor, min_face)
    psnr = {m: np.zeros((len(faces), len(shifts))) for m in methods.names}
    enhanced = {m: np.zeros((len(faces), len(shifts)), bool) for m in methods.names}
    errors = {m: [[] for _ in faces] for m in methods.names}
    strip = []
    settle = TRACK_CONFIRM_HITS - 1  # the first frame a track can be confirmed (and enhanced) in
    for t, (truth, low, shift) in enumerate(zip(truths, lows, shifts)):
        views, found = methods.run(low, t)
        truth_y = y_channel(truth)
        for m, view in views.items():
            out_y = y_channel(view)
            error = scene_error(out_y, truth_y, shift) if t >= settle else None
            for i, (x, y, w, h) in enumerate(faces):
                psnr[m][i, t] = face_psnr(out_y, truth_y, (x, y, w, h), shift)
                lr_box = ((x + shift[0]) / factor, (y + shift[1]) / factor, w / factor, h / factor)
                enhanced[m][i, t] = enhanced_here(found[m], lr_box)
                if error is not None:
                    x0, y0, side_w, side_h = moved_box((x, y, w, h), (0, 0))
                    errors[m][i].append(error[y0:y0 + side_h, x0:x0 + side_w])
        if keep_strip and faces:
            strip.append(strip_row_crops(views, low, truth, faces[0], shift, factor))
    flicker = {m: [temporal_flicker(e) for e in errors[m]] for m in methods.names}
    costs = methods.costs()
    log.info("%s %s K=%d: %d faces, %s", scene_name, kind, factor, len(faces),
             ", ".join(f"{m} {psnr[m].mean():.2f} dB" for m in methods.names) if faces else "no face inside")
    return {"scene": scene_name, "camera": kind, "K": factor, "methods": methods.names,
            "settings": None if camera is None else repr(camera), "shifts_hr_px": np.round(shifts, 3).tolist(),
            "face_boxes": [list(b) for b in faces],
            "face_lr_px": [round(float(np.sqrt(b[2] * b[3])) / factor, 1) for b in faces],
            "psnr": {m: v.tolist() for m, v in psnr.items()},
            "enhanced": {m: v.tolist() for m, v in enhanced.items()},
            "flicker": flicker, "costs": costs, "flicker_from_frame": settle, "strip": strip}


def summarize_cameras(cameras: list[dict], seed: int) -> list[dict]:
    """One row per (scene, camera, K, method), and per (camera, K, method) over all scenes when there are
    several: faces pooled, gains bootstrapped over faces."""
    groups: dict[tuple, list[dict]] = {}
    for cam in cameras:
        groups.setdefault((cam["scene"], cam["camera"], cam["K"]), []).append(cam)
    if len({c["scene"] for c in cameras}) > 1:
        for cam in cameras:
            groups.setdefault(("all scenes", cam["camera"], cam["K"]), []).append(cam)
    rng = np.random.default_rng(seed)
    rows = []
    for (scene, kind, factor), members in groups.items():
        members = [c for c in members if c["face_boxes"]]
        if not members:
            continue
        for m in members[0]["methods"]:
            psnr = np.concatenate([np.asarray(c["psnr"][m]) for c in members])  # [faces, frames]
            base = np.concatenate([np.asarray(c["psnr"]["bicubic"]) for c in members])
            flicker = np.concatenate([c["flicker"][m] for c in members])
            base_flicker = np.concatenate([c["flicker"]["bicubic"] for c in members])
            gains = (psnr - base).mean(axis=1)  # per face
            low, high = bootstrap_ci(gains, rng) if m != "bicubic" else (0.0, 0.0)
            enhanced = np.concatenate([np.asarray(c["enhanced"][m]).ravel() for c in members])
            costs = [c["costs"][m]["ms_per_face"] for c in members if c["costs"][m]["ms_per_face"] is not None]
            windows = [c["costs"][m].get("fusion_windows") for c in members]
            offered = sum(w["offered"] for w in windows if w)
            rows.append({"scene": scene, "camera": kind, "K": factor, "method": m, "faces": len(psnr),
                         "frames": psnr.shape[1], "psnr_db": float(psnr.mean()), "gain_db": float(gains.mean()),
                         "gain_ci95": [low, high], "flicker": float(flicker.mean()),
                         "flicker_ratio": float(flicker.mean() / base_flicker.mean()),
                         "enhanced_share": float(enhanced.mean()),
                         "ms_per_face": float(np.mean(costs)) if costs else None,
                         "fusion_registered": sum(w["used"] for w in windows if w) / offered if offered else None,
                         "per_face_psnr_db": psnr.mean(axis=1).round(3).tolist()})
    return rows


def per_frame_means(cameras: list[dict]) -> dict:
    """{"camera K=k": {method: [mean face PSNR per frame]}} over every scene's faces: the plot's lines."""
    series: dict[str, dict] = {}
    for cam in cameras:
        if not cam["face_boxes"]:
            continue
        key = f"{cam['camera']} K={cam['K']}"
        for m in cam["methods"]:
            series.setdefault(key, {}).setdefault(m, []).append(np.asarray(cam["psnr"][m]))
    return {key: {m: np.concatenate(v).mean(axis=0).round(3).tolist() for m, v in methods.items()}
            for key, methods in series.items()}


# --- the side-by-side picture ---------------------------------------------------------------------------
def strip_row_crops(views: dict, low: np.ndarray, truth: np.ndarray, box, shift, factor: int) -> dict:
    """The face's framing square (as the runtime frames it) from every method's view, the LR frame and the
    truth, as frame t shows it."""
    from runtime.faces import Square, crop_square, square_around

    sq = square_around(tuple(map(float, box)))
    moved = Square(sq.x + shift[0], sq.y + shift[1], sq.side)
    crops = {"LR": crop_square(low, Square(moved.x / factor, moved.y / factor, moved.side / factor))}
    crops.update({m: crop_square(v, moved) for m, v in views.items()})
    crops["truth"] = crop_square(truth, moved)
    return crops


def side_by_side(strip: list[dict], first: int, path: Path) -> Path | None:
    """Rows: STRIP_FRAMES frames from `first` (the first confirmable) on; columns: LR | bicubic | methods |
    truth."""
    if not strip:
        return None
    picks = np.unique(np.linspace(min(first, len(strip) - 1), len(strip) - 1, STRIP_FRAMES).round().astype(int))
    columns = list(strip[0])
    header = np.full((22, STRIP_TILE * len(columns), 3), 255, np.uint8)
    for c, name in enumerate(columns):
        cv2.putText(header, name, (c * STRIP_TILE + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    rows = [header]
    for t in picks:
        tiles = [cv2.resize(strip[t][c], (STRIP_TILE, STRIP_TILE),
                            interpolation=cv2.INTER_NEAREST if c == "LR" else cv2.INTER_AREA) for c in columns]
        row = np.hstack(tiles)
        cv2.putText(row, f"t={t}", (4, STRIP_TILE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                    cv2.LINE_AA)
        rows.append(row)
    cv2.imwrite(str(path), np.vstack(rows))
    return path


# --- the street video -----------------------------------------------------------------------------------
def street_frames(path: Path, width: int, limit: int | None):
    """(small, original) frame pairs, the small one resized as --input-width resizes (INTER_AREA)."""
    capture = cv2.VideoCapture(str(path))
    try:
        while limit is None or limit > 0:
            ok, frame = capture.read()
            if not ok:
                break
            height = max(1, round(frame.shape[0] * width / frame.shape[1]))
            yield cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA), frame
            limit = None if limit is None else limit - 1
    finally:
        capture.release()


def evaluate_street(video: Path, args, backends, detector, min_face: float) -> dict:
    """Per track: temporal std of its registered enhanced crops, per method (see the module docstring)."""
    from runtime.faces import Square, crop_square

    upscale = args.street_upscale
    methods = Methods(method_names(args.fuse_frames), backends, detector, upscale, min_face)
    crops: dict[int, list] = {}  # track -> [(frame, {method: crop, "reference": crop})]
    sides: dict[int, float] = {}
    for t, (small, original) in enumerate(street_frames(video, args.input_width, args.street_frames)):
        views, found = methods.run(small, t)
        reference = cv2.resize(original, (views["bicubic"].shape[1], views["bicubic"].shape[0]),
                               interpolation=cv2.INTER_AREA)
        follow = found[methods.names[1]] if len(methods.names) > 1 else []  # tracks as the first SR run sees them
        for face in follow:
            if face.sr is None:
                continue
            side = sides.setdefault(face.track_id, face.square.side * upscale)  # fixed per track: no rescaling
            cx, cy = (face.square.x + face.square.side / 2) * upscale, (face.square.y + face.square.side / 2) * upscale
            square = Square(cx - side / 2, cy - side / 2, side)
            cut = {m: crop_square(v, square) for m, v in views.items()}
            cut["reference"] = crop_square(reference, square)
            crops.setdefault(face.track_id, []).append((t, cut))
    tracks = [track_stability(track, runs, methods.names) for track, runs in sorted(crops.items())]
    tracks = [t for t in tracks if t is not None]
    return {"video": str(video), "input_width": args.input_width, "upscale": upscale, "frames": methods.frames,
            "methods": methods.names, "tracks": tracks, "enhanced_faces": sum(len(c) for c in crops.values()),
            "costs": methods.costs()}


def consecutive_runs(items: list[tuple[int, dict]]) -> list[list[dict]]:
    runs, last = [], None
    for t, crop in items:
        if last is None or t != last + 1:
            runs.append([])
        runs[-1].append(crop)
        last = t
    return runs


def register_run(crops: list[dict], names: list[str]) -> dict[str, np.ndarray]:
    """{method: [T, h, w] Y crops} shifted onto the run's first crop (shifts measured on the bicubic crops,
    consecutive pairs chained), the outer 15 % cut off (edges the shift brought in)."""
    greys = [y_channel(c["bicubic"]).astype(np.float32) for c in crops]
    hann = cv2.createHanningWindow((greys[0].shape[1], greys[0].shape[0]), cv2.CV_32F)
    offsets = [np.zeros(2)]
    for before, after in itertools.pairwise(greys):
        (dx, dy), _ = cv2.phaseCorrelate(before, after, hann)
        offsets.append(offsets[-1] + (dx, dy))
    side = greys[0].shape[0]
    margin = int(0.15 * side)
    inner = slice(margin, side - margin)
    stacks = {}
    for m in names + ["reference"]:
        stacks[m] = np.stack([shift_image(y_channel(c[m]).astype(np.float32), -o[0], -o[1], cv2.INTER_CUBIC)
                              [inner, inner] for c, o in zip(crops, offsets)])
    return stacks


def track_stability(track: int, items: list, names: list[str]) -> dict | None:
    """A track's temporal std per method (sliding windows of FLICKER_WINDOW registered crops), its Y-PSNR
    against the 1080p recording; None when it was never enhanced FLICKER_WINDOW frames in a row."""
    stds = {m: [] for m in names}
    for run in consecutive_runs(items):
        if len(run) < FLICKER_WINDOW:
            continue
        stacks = register_run(run, names)
        for start in range(len(run) - FLICKER_WINDOW + 1):
            for m in names:
                stds[m].append(temporal_flicker(stacks[m][start:start + FLICKER_WINDOW]))
    if not stds[names[0]]:
        return None
    psnr = {m: float(np.mean([region_psnr(y_channel(c[m]), y_channel(c["reference"]),
                                          np.ones(c[m].shape[:2], bool)) for _, c in items])) for m in names}
    return {"track": track, "frames": len(items), "windows": len(stds[names[0]]),
            "temporal_std": {m: float(np.mean(v)) for m, v in stds.items()}, "psnr_vs_1080p_db": psnr}


def summarize_street(street: dict) -> list[dict]:
    tracks = street["tracks"]
    if not tracks:
        return []
    base = np.mean([t["temporal_std"]["bicubic"] for t in tracks])
    rows = []
    for m in street["methods"]:
        std = float(np.mean([t["temporal_std"][m] for t in tracks]))
        windows = street["costs"][m].get("fusion_windows")
        rows.append({"method": m, "tracks": len(tracks), "temporal_std": std, "ratio": float(std / base),
                     "psnr_vs_1080p_db": float(np.mean([t["psnr_vs_1080p_db"][m] for t in tracks])),
                     "ms_per_face": street["costs"][m]["ms_per_face"],
                     "fusion_registered": windows["used"] / windows["offered"] if windows and windows["offered"]
                     else None})
    return rows


# --- the command ----------------------------------------------------------------------------------------
def scene_boxes(reference_detector, scene: np.ndarray) -> list:
    """Ground-truth face boxes: YuNet on the full-resolution photo, confident detections only."""
    return [d.box for d in reference_detector.detect(scene) if d.score >= REFERENCE_SCORE]


def output_folder(args) -> Path:
    """Where run_and_report will write (the side-by-side picture goes there too)."""
    info = {"machine": machine_info()}
    return Path(results_dir(args, info) or RESULTS_ROOT / machine_tag(info["machine"]))


def report_kind(args) -> str:
    return "video" if args.degradation == "camera" else f"video_{args.degradation}"


def run(args) -> dict:
    from runtime.backends import create_backend, load_models
    from runtime.detect import FaceDetector
    from runtime.routing import default_min_face
    from runtime.shared_data import MISSING_HINT, shared_dir

    root = shared_dir()
    if root is None:
        raise SystemExit(f"the shared scenes are needed ({MISSING_HINT})")
    detector_path = Path(args.detector_model or root / "models" / "face_detection_yunet_2023mar.onnx")
    reference_detector = FaceDetector(detector_path, max_side=100_000)
    # as the CLI loads them; the fused-grade twin reads only fused faces, so single-frame methods never use it
    artifacts = load_models(args.models, args.camera_grade, args.fused_grade)
    min_face = default_min_face(artifacts)
    detector = FaceDetector(detector_path, min_face_px=min_face)  # as the CLI makes it
    backends = [create_backend("auto", a).activate() for a in artifacts]
    cameras, street = [], None
    try:
        for s, name in enumerate(args.scenes):
            photo = cv2.imread(str(root / name))
            if photo is None:
                raise SystemExit(f"--scenes: cannot read {root / name} (scene paths are relative to {root}, "
                                 f"e.g. {PHOTOS[0]})")
            scene = photo[: photo.shape[0] // 8 * 8, : photo.shape[1] // 8 * 8]  # whole LR pixels for K = 4, 8
            boxes = scene_boxes(reference_detector, scene)
            for c, kind in enumerate(args.cameras):
                for k, factor in enumerate(args.factors):
                    for d in range(args.draws):  # cameras of one kind with their own optics, pooled in the rows
                        cameras.append(evaluate_camera(Path(name).stem, scene, boxes, kind, factor, args, backends,
                                                       detector, min_face, seed=args.seed + 1000 * s + factor + 100 * d,
                                                       keep_strip=(s, c, k, d) == (0, 0, 0, 0)))
        if not args.no_street:
            street = evaluate_street(root / "data/scenes/street-video-1080p.mp4", args, backends, detector,
                                     min_face)
    finally:
        for backend in backends:
            backend.deactivate()
    folder = output_folder(args)
    folder.mkdir(parents=True, exist_ok=True)
    picture = side_by_side(cameras[0]["strip"] if cameras else [], cameras[0]["flicker_from_frame"] if cameras else 0,
                           folder / f"{report_kind(args)}_faces.png")
    for cam in cameras:
        cam.pop("strip")
    return {"models": [str(a.path) for a in artifacts], "degradation": args.degradation,
            "fusion": "available" if fusion_available() else "not in this checkout (EnhanceConfig has no "
                                                              "fuse_frames): fused methods left out",
            "motion": args.motion, "shake_lr_px": args.shake, "pan_lr_px_per_frame": args.pan,
            "frames": args.frames, "draws": args.draws, "cameras": cameras,
            "summary": summarize_cameras(cameras, args.seed),
            "per_frame_psnr": per_frame_means(cameras), "street": street,
            "street_summary": summarize_street(street) if street else [],
            "faces_picture": str(picture) if picture else None}


def to_markdown(payload: dict) -> str:
    rows = [[r["scene"], r["camera"], r["K"], r["method"], r["faces"], r["frames"], r["psnr_db"],
             "" if r["method"] == "bicubic" else f"{r['gain_db']:+.2f} [{r['gain_ci95'][0]:+.2f}, "
                                                 f"{r['gain_ci95'][1]:+.2f}]",
             r["flicker"], r["flicker_ratio"], f"{100 * r['enhanced_share']:.0f} %", r["ms_per_face"],
             percent(r.get("fusion_registered"))]
            for r in payload["summary"]]
    text = (f"# Video — synthetic cameras against ground truth, {payload['degradation']} degradation\n\n"
            f"Command: `{payload['command']}`  \nModels: {', '.join(payload['models'])}  \n"
            f"Fusion (`EnhanceConfig.fuse_frames`): {payload['fusion']}  \n"
            f"{payload['frames']} frames per camera, {payload.get('draws', 1)} camera(s) per scene, kind and K; "
            f"static: {payload['motion']} shake up to "
            f"±{payload['shake_lr_px']} LR px; panning: {payload['pan_lr_px_per_frame']} LR px per frame.\n\n"
            "Y-PSNR in the ground-truth face boxes, mean over faces and frames (frames before a track is "
            "confirmed show bicubic and are scored as shown); gain over bicubic with a bootstrap 95 % CI over "
            "faces; flicker = temporal std of the Y error per face pixel (grey levels) from the first "
            "confirmable frame on, and its ratio to bicubic's; enhanced = share of face-frames the runtime "
            "enhanced; ms/face: CPU time of prepare (+ fusion) and SR per enhanced face (bicubic: the "
            "whole-frame resize per face); registered: share of earlier face windows the fusion registered "
            "and averaged in.\n\n"
            + markdown_table(["scene", "camera", "K", "method", "faces", "frames", "Y-PSNR (dB)",
                              "gain [95 % CI]", "flicker", "flicker / bicubic", "enhanced", "ms/face",
                              "registered"], rows))
    text += ("\n## Per face\n\nY-PSNR (dB) per face, mean over frames; flicker in brackets.\n\n"
             + per_face_table(payload))
    street = payload["street"]
    if street and not payload["street_summary"]:
        text += (f"\n## Street video\n\nNo track was enhanced {FLICKER_WINDOW} frames in a row in "
                 f"{street['frames']} frames ({street['enhanced_faces']} enhanced faces).\n")
    elif street:
        rows = [[r["method"], r["tracks"], r["temporal_std"], r["ratio"], r["psnr_vs_1080p_db"], r["ms_per_face"],
                 percent(r.get("fusion_registered"))] for r in payload["street_summary"]]
        text += (f"\n## Street video ({street['frames']} frames, {street['input_width']} px wide, shown "
                 f"{street['upscale']}x, {street['enhanced_faces']} enhanced faces)\n\n"
                 f"Per track: temporal std of the registered face crops over windows of {FLICKER_WINDOW} "
                 "frames (grey levels, Y), mean over tracks; the 1080p recording as a reference.\n\n"
                 + markdown_table(["method", "tracks", "temporal std", "/ bicubic", "Y-PSNR vs 1080p (dB)",
                                   "ms/face", "registered"], rows))
    return text


def per_face_table(payload: dict) -> str:
    rows, methods = [], None
    for cam in payload["cameras"]:
        methods = methods or cam["methods"]
        for i, size in enumerate(cam["face_lr_px"]):
            rows.append([cam["scene"], cam["camera"], cam["K"], i, size]
                        + [f"{np.mean(cam['psnr'][m][i]):.2f} ({cam['flicker'][m][i]:.2f})" for m in methods])
    return markdown_table(["scene", "camera", "K", "face", "LR px"] + (methods or []), rows)


def percent(share: float | None) -> str:
    return "" if share is None else f"{100 * share:.0f} %"


def plot(payload: dict, path: Path) -> Path | None:
    plt = pyplot()
    series = payload["per_frame_psnr"]
    if plt is None or not series:
        return None
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.2), squeeze=False)
    first = payload["cameras"][0]["flicker_from_frame"]
    for ax, (key, methods) in zip(axes[0], series.items()):
        for m, values in methods.items():
            ax.plot(range(len(values)), values, marker=".", label=m)
        ax.axvline(first, color="grey", linewidth=0.8, linestyle=":")  # tracks can be confirmed from here
        ax.set_xlabel("frame")
        ax.set_ylabel("face Y-PSNR (dB)")
        ax.legend(fontsize=7)
        ax.set_title(f"{key}: face Y-PSNR per frame", fontsize=8)
        ax.grid(True, alpha=0.3)
    return save_figure(fig, axes[0][-1], path, f"{list(series)[-1]}: face Y-PSNR per frame")


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.video", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="artifact manifests (as --model of runtime.enhance)")
    p.add_argument("--no-camera-grade", dest="camera_grade", action="store_false",
                   help="without the camera-grade twins the manifests name (as the CLI's --no-camera-grade)")
    p.add_argument("--no-fused-grade", dest="fused_grade", action="store_false",
                   help="without the fused-grade twins the manifests name (as the CLI's --no-fused-grade)")
    p.add_argument("--quick", action="store_true", help="8 frames, K = 8, group-6faces, 12 street frames")
    p.add_argument("--degradation", default="camera", choices=("clean", "camera", "heavy"),
                   help="the synthetic cameras' recording (training.degrade level; default camera)")
    p.add_argument("--fuse-frames", type=int_list, default=[0, 5],
                   help="comma list: 0 = single-frame SR, N > 1 = EnhanceConfig(fuse_frames=N) (default 0,5)")
    p.add_argument("--frames", type=int, help="frames per synthetic camera (default 24; --quick 8)")
    p.add_argument("--factors", type=int_list, help="camera downscale K = --upscale, comma list (default 8,4)")
    p.add_argument("--scenes", nargs="+", help=f"scene photos under ../shared (default: {' '.join(PHOTOS)})")
    p.add_argument("--cameras", type=lambda s: s.split(","), default=list(CAMERAS), help="static,panning")
    p.add_argument("--motion", default="jitter", choices=("jitter", "walk"),
                   help="static camera: independent jitter per frame or a smooth random walk")
    p.add_argument("--shake", type=float, default=0.5, help="static camera: largest shift, LR px (default 0.5)")
    p.add_argument("--pan", type=float, default=0.3, help="panning camera: LR px per frame (default 0.3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1,
                   help="cameras drawn per scene, kind and K, each with its own blur, noise and codec from the "
                        "level; their faces are pooled in the rows (default 1: one camera is one draw of a range)")
    p.add_argument("--no-street", action="store_true", help="skip the street video")
    p.add_argument("--street-frames", type=int, help="street video frames (default all; --quick 12)")
    p.add_argument("--input-width", type=int, default=480, help="street video width (default 480)")
    p.add_argument("--street-upscale", type=float, default=4.0, help="street video --upscale (default 4)")
    p.add_argument("--detector-model", help="YuNet ONNX (default: ../shared/models/...)")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    args = p.parse_args(argv)
    args.frames = args.frames or (8 if args.quick else 24)
    args.factors = args.factors or ([8] if args.quick else [8, 4])
    args.scenes = args.scenes or (list(PHOTOS[:1]) if args.quick else list(PHOTOS))
    args.street_frames = args.street_frames or (12 if args.quick else None)
    unknown = set(args.cameras) - set(CAMERAS)
    if unknown:
        p.error(f"unknown camera {', '.join(sorted(unknown))}; expected {', '.join(CAMERAS)}")
    return run_and_report(report_kind(args), run, args, to_markdown, plot)


if __name__ == "__main__":
    raise SystemExit(main())
