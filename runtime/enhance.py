"""`python -m runtime.enhance`: enhance every face of a camera, stream, video or image folder, live.

Example:
    python -m runtime.enhance --source street.mp4 --model artifacts/pfsr_fp32.json --upscale 4 --output out.mp4
    python -m runtime.enhance --source small.png --model x8.json --model x4.json --upscale 8 --output big.png

Each face goes to the model whose input fits its native size best, and only when that adds detail at the
size it is shown (docs/runtime.md, "Scale routing"); --enhance-all sends every face through anyway.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import cv2

from .assets import detector_model_path
from .backends import BACKENDS, create_backend, load_models, resolve_backend_name
from .backends.triton_backend import REQUEST_TIMEOUT_S
from .compose import VIEWS
from .constants import (
    CROP_FILES_KEPT, DETECT_MAX_SIDE, MAX_FACES, MIN_FACE_INPUT_FRACTION, TRACK_CONFIRM_HITS, TRACK_CONFIRM_SCORE,
)
from .detect import FaceDetector
from .errors import RuntimeToolkitError, SinkError
from .pipeline import LANDMARK_OUTPUT, EnhanceConfig, Enhancer
from .files import write_json_atomic
from .outputs import file_outputs, list_outputs, open_outputs, parse_output
from .progress import Progress
from .routing import default_min_face, kept_summary
from .records import BestCropStore, EventLog, OutputClaim
from .run import Lane, StopSignals, peak_rss_mb, run_lanes, summarize
from .sources import SourceOptions, list_sources, open_source
from .timing import StageTimer

log = logging.getLogger("runtime.enhance")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} received; expected an integer >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} received; expected a number > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.enhance", description=__doc__.split("\n")[0],
                                epilog="Sources and views: docs/runtime.md")
    p.add_argument("--list-sources", action="store_true",
                   help="list the cameras found and the source and output kinds this install supports, then exit")
    p.add_argument("--source", action="append",
                   help="0, /dev/video0, csi://0, video file, image, image folder, rtsp://... or http://... URL, or a "
                        "GStreamer pipeline (with '!'); repeat for several sources in one process (one model, "
                        "faces batched across sources; every --output/--events/--save-crops then needs "
                        "'{source}', which becomes 0, 1, ...)")
    p.add_argument("--model", action="append",
                   help="model artifact: manifest .json, .onnx or .engine, or triton://HOST:PORT/NAME (a model "
                        "served by Triton); repeat for models of other input sizes (e.g. a x8 16 -> 128 and a x4 "
                        "32 -> 128 model)")
    p.add_argument("--backend", default="auto", choices=["auto", *BACKENDS],
                   help="auto: triton for triton:// models, tensorrt for an .engine when TensorRT is installed, else "
                        "onnxruntime")
    p.add_argument("--remote-timeout", type=float, default=REQUEST_TIMEOUT_S, metavar="S",
                   help=f"triton:// models: seconds a request may take before it is retried (default "
                        f"{REQUEST_TIMEOUT_S:g}); a stop signal ends a waiting request at once")
    p.add_argument("--output", action="append",
                   help="where the views go; repeat for several: a video file (.mp4/.avi/.mkv), an image folder, "
                        "display://0 (a window), http://@:PORT/ (a web page + MJPEG; @ = every interface), "
                        "rtsp://HOST:PORT/PATH (publish to an RTSP server), rtp://HOST:PORT[?sdp=FILE], "
                        "webrtc://@:PORT/NAME (a low-latency viewer page). Default: a window when a display exists")
    p.add_argument("--view", default="overlay", choices=VIEWS)
    p.add_argument("--input-width", type=_positive_int, metavar="W",
                   help="resize every frame to W pixels wide (aspect kept) as it leaves the source: see how the "
                        "models do on a camera of lower resolution, or lighten a heavy stream")
    p.add_argument("--upscale", type=_positive_float, default=1.0,
                   help="overlay view: scale of the output frame (faces are pasted at this scale; default 1)")
    p.add_argument("--detect-every", type=_positive_int, default=1, help="run the detector every N frames "
                                                                         "(tracking in between; default 1)")
    p.add_argument("--max-faces", type=_positive_int, default=MAX_FACES, help=f"faces per frame, largest first "
                                                                              f"(default {MAX_FACES})")
    p.add_argument("--min-face", type=_positive_float,
                   help=f"skip faces smaller than this many pixels; also sets the detection scale (default "
                        f"{MIN_FACE_INPUT_FRACTION} x the smallest model input, 10 px for the 16 px models; lower for "
                        "weights trained on smaller faces, see runtime.routing.default_min_face)")
    p.add_argument("--detect-max-side", type=_positive_int, default=DETECT_MAX_SIDE,
                   help=f"detection budget: longest side of the frame as detected (default {DETECT_MAX_SIDE})")
    p.add_argument("--enhance-all", action="store_true",
                   help="enhance every face, even where routing keeps the recorded pixels (shown at or below its "
                        "recorded size, or larger than the model's crossover)")
    p.add_argument("--no-camera-grade", dest="camera_grade", action="store_false",
                   help="do not load the camera-grade twin a model's manifest names (the default exports of pfsr, "
                        "pfsr_x4 and dic have one): every face goes to the model given, whatever its recording "
                        "looks like (docs/runtime.md, 'Camera-grade twins')")
    p.add_argument("--fuse-frames", type=_positive_int, default=1, metavar="N",
                   help="videos and cameras: SR reads each face averaged with its N-1 earlier frames, registered, "
                        "and each enhanced face is blended with its track's previous one where they agree (less "
                        "noise and compression, less shimmer; docs/runtime.md, 'Temporal fusion'); 1 = off")
    p.add_argument("--no-fused-grade", dest="fused_grade", action="store_false",
                   help="with --fuse-frames: do not load the fused-grade twin a model's manifest names (the "
                        "default export of pfsr has one, trained on fused faces): fused faces go to the model "
                        "given (or its camera-grade twin)")
    p.add_argument("--self-ensemble", action="store_true",
                   help="run every face batch twice, as recorded and mirrored, and average the two (a little more "
                        "fidelity for twice the SR time; see docs/runtime.md)")
    p.add_argument("--draw-landmarks", action="store_true",
                   help="draw each enhanced face's landmarks (a model exported with --with-landmarks; the events "
                        "carry them in any case)")
    p.add_argument("--save-crops", metavar="DIR", help="keep the best enhanced crop per track in DIR")
    p.add_argument("--crops-keep", type=int, default=CROP_FILES_KEPT, metavar="N",
                   help=f"--save-crops: keep the crops of the N most recent tracks, deleting older ones (default "
                        f"{CROP_FILES_KEPT}; 0: keep every crop)")
    p.add_argument("--events", metavar="FILE.jsonl", help="write one JSON line per track update")
    p.add_argument("--summary", metavar="FILE.json", help="also write the end-of-run summary here")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (--output, --events, --save-crops); without it they are refused")
    p.add_argument("--append-events", action="store_true", help="add to an existing --events file")
    p.add_argument("--max-frames", type=_positive_int, help="stop after N frames")
    p.add_argument("--headless", action="store_true", help="never open a window")
    p.add_argument("--no-fps", action="store_true", help="do not draw the FPS overlay")
    p.add_argument("--pipelined", action="store_true",
                   help="run capture+detection, SR and compose+outputs on three threads joined by bounded queues "
                        "(same results for files; see docs/runtime.md)")
    p.add_argument("--sr-workers", type=_positive_int, default=1,
                   help="with --pipelined or several sources: SR threads running batches of different frames at "
                        "once (onnxruntime backend). On a CPU, --sr-workers 2 --threads 1 can beat one 2-thread "
                        "run (measure it: `python -m benchmarks.cpu_scaling`); frames are still written in order")
    p.add_argument("--max-batch", type=_positive_int,
                   help="at most N faces per network call (default: the model's max batch). On a CPU larger batches "
                        "are not faster and cost activation memory (PFSR: about 10 MB a face): with several sources "
                        "or --sr-workers, 8 keeps memory down at the same speed")
    p.add_argument("--threads", type=_positive_int,
                   help="CPU threads of each heavy stage: ONNX Runtime's intra-op threads for the SR model and "
                        "OpenCV's pool (detection, resizing, encoding). Default: their own choice (all cores); with "
                        "--pipelined or several sources, stages run at once and 1 can be faster (measure it: "
                        "`python -m benchmarks.pipeline --compare`)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar / status line (also off when stderr is not a terminal)")
    p.add_argument("--detector-model", help="YuNet ONNX file (default: the per-user cache, see "
                                            "`python -m runtime.assets fetch`)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def run(args: argparse.Namespace, stop: StopSignals | None = None) -> dict:
    """Everything after argument parsing; returns the summary. Raises RuntimeToolkitError."""
    artifacts = load_models(args.model, args.camera_grade, args.fused_grade and args.fuse_frames > 1)
    if args.draw_landmarks and not any(o.name == LANDMARK_OUTPUT for a in artifacts for o in a.outputs):
        raise RuntimeToolkitError("--draw-landmarks needs a model with a 'landmarks' output; export one with "
                                  "`python -m export.build --model dic --with-landmarks`.")
    min_face = args.min_face or default_min_face(artifacts)
    if args.threads:
        cv2.setNumThreads(args.threads)
    with ExitStack() as stack:
        backends = [stack.enter_context(create_backend(args.backend, artifact, **_backend_options(args, artifact)))
                    for artifact in artifacts]
        for backend in backends:
            backend.batch_limit = args.max_batch
        extra = {"models": [str(a.path) for a in artifacts], "backends": [b.name for b in backends],
                 "view": args.view, "upscale": args.upscale, "min_face_px": round(min_face, 1),
                 "detect_every": args.detect_every, "threads": args.threads, "max_batch": args.max_batch}
        lanes = [_open_lane(args, stack, backends, min_face, number if len(args.source) > 1 else None)
                 for number in range(len(args.source))]
        sr_timer = StageTimer()
        start = time.perf_counter()
        run_lanes(lanes, threaded=args.pipelined or len(lanes) > 1, max_frames=args.max_frames, stop=stop,
                  sr_workers=args.sr_workers, sr_timer=None if len(lanes) == 1 else sr_timer)
        for lane in lanes:
            lane.stats.error = lane.stats.error or lane.source.damage
            _say_why_faces_were_kept(lane)
            _close_output(lane.sink, lane.stats)
        wall = time.perf_counter() - start
    extra["stopped_by_signal"] = stop.received if stop is not None else None
    if len(lanes) == 1:
        return _summary_of_one(args, lanes[0], wall, extra)
    return _summary_of_several(args, lanes, wall, sr_timer, extra)


def _summary_of_one(args, lane: Lane, wall: float, extra: dict) -> dict:
    extra = {"source": args.source[0], **extra, "pipelined": args.pipelined, "sr_workers": args.sr_workers,
             "frames_dropped": lane.source.frames_dropped, "reconnects": getattr(lane.source, "reconnects", 0),
             **_fusion_summary(lane)}
    return summarize(lane.stats, lane.enhancer.timer, wall, extra)


def _fusion_summary(lane: Lane) -> dict:
    """--fuse-frames: how many earlier face windows were looked at and how many registered and were averaged in;
    how many enhanced faces had their track's previous output to blend with, and how many were blended."""
    fusion, steadier = lane.enhancer.fusion, lane.enhancer.steady
    if fusion is None:
        return {}
    return {"fusion": {"frames": lane.enhancer.config.fuse_frames, "earlier_faces_offered": fusion.offered,
                       "earlier_faces_used": fusion.used, "steady_faces_offered": steadier.offered,
                       "steady_faces_blended": steadier.blended}}


def _summary_of_several(args, lanes: list[Lane], wall: float, sr_timer: StageTimer, extra: dict) -> dict:
    """A summary per source and one for them all."""
    per_source = [summarize(lane.stats, lane.enhancer.timer, wall,
                            {"source": text, "frames_dropped": lane.source.frames_dropped, **_fusion_summary(lane)})
                  for text, lane in zip(args.source, lanes)]
    frames, faces = sum(s["frames"] for s in per_source), sum(s["faces"] for s in per_source)
    errors = [s["error"] for s in per_source if s["error"]]
    return {**extra, "sr_workers": args.sr_workers, "sources": per_source, "frames": frames, "faces": faces,
            "wall_s": round(wall, 3),
            "fps_total": round(frames / wall, 3) if wall > 0 else None,
            "faces_per_s": round(faces / wall, 3) if wall > 0 else None,
            "sr_ms": sr_timer.summary().get("sr"), "sr_batches": lanes[0].stats.queues.get("sr_batches"),
            "peak_rss_mb": peak_rss_mb(), "error": "; ".join(errors) or None}


def _say_why_faces_were_kept(lane: Lane) -> None:
    """One line: the faces kept as recorded, by reason, with what would enhance them (a warning when no face
    at all was enhanced: the user should not have to guess)."""
    stats = lane.stats
    if stats.kept:
        level = logging.WARNING if stats.enhanced == 0 else logging.INFO
        log.log(level, "%s%d of %d faces kept as recorded: %s", lane.label, sum(stats.kept.values()), stats.faces,
                kept_summary(stats.kept))


def _backend_options(args, artifact) -> dict:
    options = {"self_ensemble": args.self_ensemble}
    backend = resolve_backend_name(args.backend, artifact)
    if backend == "triton":
        options["timeout_s"] = args.remote_timeout
    if args.threads and backend == "onnxruntime":
        options["intra_op_threads"] = args.threads
    return options


def _open_lane(args: argparse.Namespace, stack: ExitStack, backends, min_face: float, number: int | None = None):
    """Source, outputs, records and enhancer (with its own detector and tracker) of one source."""
    def named(text):  # "{source}" -> this source's index
        return text if text is None or number is None else text.replace("{source}", str(number))

    source_text = args.source[number or 0]
    outputs = [named(text) for text in args.output] if args.output else None
    events_path, crops_dir = named(args.events), named(args.save_crops)
    detector = FaceDetector(detector_model_path(args.detector_model), max_side=args.detect_max_side,
                            min_face_px=min_face, min_face_asked=args.min_face is not None)
    source = stack.enter_context(open_source(source_text, SourceOptions(input_width=args.input_width)))
    claims = [(events_path, "--events"), (crops_dir, "--save-crops")]
    claims += [(path, "--output") for path in file_outputs(outputs)]
    for path, flag in claims:
        if path:
            stack.enter_context(OutputClaim(path, flag, args.overwrite,
                                            append=flag == "--events" and args.append_events))
    stills = source.uri.scheme in ("image", "folder")  # no second frame to confirm a face with
    config = EnhanceConfig(view=args.view, detect_every=args.detect_every, max_faces=args.max_faces,
                           min_face=min_face, upscale=args.upscale, show_fps=not args.no_fps,
                           enhance_all=args.enhance_all, confirm_hits=1 if stills else TRACK_CONFIRM_HITS,
                           confirm_score=0.0 if stills else TRACK_CONFIRM_SCORE, independent_frames=stills,
                           draw_landmarks=args.draw_landmarks, fuse_frames=args.fuse_frames)
    sink = stack.enter_context(open_outputs(outputs, args.headless, source.fps))
    crops = BestCropStore(crops_dir, keep_files=args.crops_keep or None) if crops_dir else None
    events = stack.enter_context(EventLog(events_path, args.append_events)) if events_path else None
    enhancer = Enhancer(backends, detector, config, crops, events, StageTimer())
    if number is not None:  # one of several: no progress line, log lines name the source
        return Lane(source, sink, enhancer, label=f"source {number}: ")
    total = min(filter(None, (source.frame_count, args.max_frames)), default=None)
    return Lane(source, sink, enhancer, progress=Progress(total, enabled=False if args.quiet else None))


def _check_sources(args) -> None:
    """With several sources, every per-source path needs '{source}' (else they would write one file);
    --sr-workers needs a pipelined loop."""
    if args.sr_workers > 1 and len(args.source) == 1 and not args.pipelined:
        raise RuntimeToolkitError(f"--sr-workers {args.sr_workers} needs --pipelined (or several sources, which "
                                  "always run pipelined)")
    if len(args.source) < 2:
        return
    if args.pipelined:
        raise RuntimeToolkitError("--pipelined is for one source; several sources always run pipelined "
                                  "(a reader and an output thread per source, one shared SR thread)")
    flagged = [("--output", text) for text in args.output or []]
    flagged += [(flag, value) for flag, value in (("--events", args.events), ("--save-crops", args.save_crops))
                if value]
    for flag, value in flagged:
        if "{source}" not in value:
            raise RuntimeToolkitError(f"{flag} {value}: with {len(args.source)} sources each needs '{{source}}' in "
                                      f"it (it becomes 0, 1, ...), e.g. {flag} out_{{source}}.mp4")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_sources:
        print("\n".join(list_sources() + list_outputs()))
        return 0
    if not args.source or not args.model:
        parser.error("--source and --model are required (or --list-sources)")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    stop = StopSignals().install()
    try:
        _check_summary_path(args.summary, args.overwrite)
        _check_sources(args)
        for text in args.output or []:  # a typo in an output fails before the models load
            parse_output(text)
        summary = run(args, stop)
    except RuntimeToolkitError as err:
        log.error("%s", err)
        return 2
    finally:
        stop.restore()
    print(json.dumps(summary, indent=2))  # the summary is never lost: printed before it is written
    if args.summary:
        try:
            write_json_atomic(Path(args.summary), summary)
        except OSError as err:
            log.error("--summary %s: cannot write it (%s); the summary is printed above", args.summary, err.strerror)
            return 2
    if summary["error"]:
        return 2  # an output failed; the summary says how far it got
    return stop.exit_code or 0


def _close_output(sink, stats) -> None:
    """Close the output now (not on leaving the run) so a failure found on close reaches the summary."""
    try:
        sink.close()
    except SinkError as err:  # after an earlier failure this says what it left: one error, completed
        if stats.error:
            stats.error = f"{stats.error}; {err}"
            log.warning("%s", err)
        else:
            stats.error = str(err)
            log.error("%s", err)


def _check_summary_path(path: str | None, overwrite: bool) -> None:
    """Refuse an unwritable --summary, or one that would replace a file without --overwrite, before the run."""
    if path is None:
        return
    if Path(path).exists() and not overwrite:
        raise RuntimeToolkitError(f"--summary {path} already exists; pass --overwrite to replace it, or choose "
                                  "another path.")
    folder = Path(path).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise RuntimeToolkitError(f"--summary {path}: the folder {folder} does not exist or is not writable; "
                                  "choose another path.")


if __name__ == "__main__":
    sys.exit(main())
