"""`python -m benchmarks.pipeline`: end-to-end FPS of the runtime on the 1080p street video.

    python -m benchmarks.pipeline --quick                     # 10 frames, tiny random model (CI runs this)
    python -m benchmarks.pipeline --model artifacts/dic_s2_fp32.json
    python -m benchmarks.pipeline --model M.json --soak 10000 # loop the video, memory over 10,000 frames
    python -m benchmarks.pipeline --model M.json --compare    # sequential vs pipelined, 1/2/4 sources in one
                                                              # process vs one process each (benchmarks.throughput)

Runs the real runtime (detect -> track -> prepare -> batched SR -> compose -> encode to a null sink)
and reports FPS, the per-stage breakdown, the share of time spent outside the network, and peak
memory (RSS). With --soak the video is replayed until N frames are done and RSS is sampled after
each pass. Results: benchmarks/results/<machine>/pipeline_<artifact>.{json,md,png}.
"""
from __future__ import annotations

import argparse
import logging
import resource
import tempfile
import time
from pathlib import Path

from .common import (command_line, detector_for, machine_info, markdown_table, pyplot, results_dir, save_figure,
                     write_results)

log = logging.getLogger("benchmarks.pipeline")
VIDEO = "data/scenes/street-video-1080p.mp4"


def rss_mb() -> float:
    """Current resident memory of this process (Linux /proc; 0 elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 2**20


def quick_artifact(outdir: Path) -> Path:
    from export.build import build

    return build("dic", random_init=True, config="tiny", steps=1, outdir=outdir).manifest_path


def run_pipeline(args, video: Path, model: Path) -> dict:
    """One or more passes over the video through one Enhancer (state persists, as in a live run)."""
    from runtime.artifact import load_artifact
    from runtime.assets import detector_model_path
    from runtime.backends import create_backend
    from runtime.detect import FaceDetector
    from runtime.outputs import NullSink
    from runtime.pipeline import EnhanceConfig, Enhancer
    from runtime.run import Lane, RunStats, run_lanes, summarize
    from runtime.sources import open_source
    from runtime.constants import TRACK_CONFIRM_HITS, TRACK_CONFIRM_SCORE
    from runtime.timing import StageTimer

    artifact = load_artifact(model)
    detector = FaceDetector(detector_model_path(detector_for(args, video)))
    timer = StageTimer()
    # Every confirmed face through the network (as --enhance-all), so the benchmark measures the SR cost
    # that routing would otherwise skip at --upscale 1; faces confirmed as the CLI does for videos.
    config = EnhanceConfig(view=args.view, detect_every=args.detect_every, show_fps=False, enhance_all=True,
                           confirm_hits=TRACK_CONFIRM_HITS, confirm_score=TRACK_CONFIRM_SCORE)
    memory, total = [], RunStats()
    target = args.soak or args.frames
    start = time.perf_counter()
    with create_backend(args.backend, artifact) as backend:
        enhancer = Enhancer(backend, detector, config, timer=timer)
        while total.frames < target:
            with open_source(str(video)) as source:
                stats, = run_lanes(Lane(source, NullSink(), enhancer), max_frames=target - total.frames)
            if stats.frames == 0:
                break
            total.frames += stats.frames
            total.faces += stats.faces
            memory.append({"frames": total.frames, "rss_mb": round(rss_mb(), 1)})
            enhancer.reset_tracks()  # a new pass is a new clip
    summary = summarize(total, timer, time.perf_counter() - start,
                        {"video": str(video), "model": str(model), "backend": backend.name, "view": args.view,
                         "detect_every": args.detect_every})
    stages = summary["stages_ms"]
    per_frame = sum(s["mean_ms"] for s in stages.values())
    summary["outside_network_share"] = round(1 - stages.get("sr", {"mean_ms": 0})["mean_ms"] / per_frame, 4)
    summary["memory"] = memory
    return summary


def to_markdown(payload: dict) -> str:
    r = payload["result"]
    rows = [[stage, v["mean_ms"], v["median_ms"]] for stage, v in r["stages_ms"].items()]
    return (f"# Pipeline — {Path(r['model']).stem} on {payload['machine'].get('gpu') or payload['machine']['cpu']}\n\n"
            f"Command: `{payload['command']}`  \nVideo: `{Path(r['video']).name}`, model `{Path(r['model']).name}`, "
            f"backend {r['backend']}, view {r['view']}, detect every {r['detect_every']} frame(s).\n\n"
            f"Frames {r['frames']}, faces {r['faces']}, **{r['fps']} FPS**, time outside the network "
            f"{100 * r['outside_network_share']:.1f}%, peak RSS {r['peak_rss_mb']} MB.\n\n"
            + markdown_table(["stage", "mean ms/frame", "median ms/frame"], rows))


def plot(payload: dict, path: Path) -> Path | None:
    memory = payload["result"]["memory"]
    if len(memory) < 2:
        return None
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([m["frames"] for m in memory], [m["rss_mb"] for m in memory], marker=".")
    ax.set_xlabel("frames processed")
    ax.set_ylabel("RSS (MB)")
    return save_figure(fig, ax, path, "Soak: memory over frames")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="10 frames with a tiny random-weights model")
    p.add_argument("--model", type=Path, help="artifact (manifest .json, .onnx, .engine); required unless --quick")
    p.add_argument("--video", type=Path, help=f"default: ../shared/{VIDEO}")
    p.add_argument("--frames", type=int, default=None, help="frames to process (default: the whole video)")
    p.add_argument("--soak", type=int, help="loop the video until this many frames are done")
    p.add_argument("--backend", default="auto")
    p.add_argument("--view", default="overlay")
    p.add_argument("--detect-every", type=int, default=3)
    p.add_argument("--detector-model")
    p.add_argument("--outdir", type=Path)
    p.add_argument("--compare", action="store_true",
                   help="run the runtime CLI sequential, --pipelined, and with --sources in one process vs as "
                        "many processes (real video files written)")
    p.add_argument("--threads", type=int, help="with --compare: the runtime's --threads (default: its own)")
    p.add_argument("--sr-workers", type=int, default=2,
                   help="with --compare: also run the pipelined loop with this many 1-thread SR workers (1: skip)")
    p.add_argument("--sources", default="1,2,4", type=lambda t: [int(v) for v in t.split(",")],
                   help="with --compare: source counts (default 1,2,4)")
    args = p.parse_args(argv)
    if args.frames is None:
        args.frames = 10 if args.quick else 105
    if not args.quick and args.model is None:
        p.error("--model is required (or use --quick)")
    return args


def find_video(explicit: Path | None) -> Path:
    from runtime.shared_data import shared_dir

    if explicit:
        return explicit
    root = shared_dir()
    if root is None or not (root / VIDEO).is_file():
        raise SystemExit(f"the street video was not found: expected ../shared/{VIDEO} (or pass --video)")
    return root / VIDEO


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    args = parse_args(argv)
    video = find_video(args.video)
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or quick_artifact(Path(scratch))
        if args.compare:
            from . import throughput

            payload = {"command": command_line(), "machine": machine_info(),
                       "result": throughput.compare(args, video, Path(model).resolve())}
            write_results(f"throughput_{Path(model).stem}", payload, throughput.to_markdown(payload),
                          results_dir(args, payload), throughput.plot)
            return 0
        payload = {"command": command_line(), "machine": machine_info(), "result": run_pipeline(args, video, model)}
        kind = f"pipeline_{Path(model).stem}"  # one report per artifact, e.g. pipeline_pfsr_s1_fp16
    write_results(kind, payload, to_markdown(payload), results_dir(args, payload), plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
