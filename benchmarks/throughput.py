"""`python -m benchmarks.pipeline --compare`: the same work through the runtime CLI, run several ways.

    sequential       python -m runtime.enhance --source V ...            (one loop: decode, detect, SR, compose, encode)
    pipelined        ... --pipelined                                     (three threads, bounded queues)
    pipelined, N SR workers ... --pipelined --sr-workers N --threads 1 --max-batch 8  (N batches at once)
    N in one process ... --source V x N, --output out_{source}.mp4      (one model, faces batched across sources)
                     ... and with --sr-workers W --threads 1 --max-batch 8
    N processes      N copies of the sequential command at once, with the runtime's default threads and with 1

Every run writes real H.264/MPEG-4 files (the encode is part of the work), detects every 3rd frame and sends every
confirmed face through the network (--enhance-all). Reported: FPS per source, total faces/s, capture-to-output
latency p50/p95 and peak memory (the sum over processes where there are several), from each run's own summary,
and how many cores the run kept busy (the processes' user + system CPU time over the wall time): a run that keeps
every core busy can only go faster by doing less work per face.
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import detector_for

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKER_MAX_BATCH = 8  # faces per network call in the SR-worker runs


def _command(video: Path, model: Path, out: Path, args, sources: int = 1, pipelined: bool = False,
             sr_workers: int = 1, threads: int | None = None) -> list[str]:
    command = [sys.executable, "-m", "runtime.enhance", "--model", str(model), "--max-frames", str(args.frames),
               "--detect-every", str(args.detect_every), "--enhance-all", "--headless", "-q", "--no-fps",
               "--summary", str(out / "summary.json")]
    command += ["--source", str(video)] * sources
    command += ["--output", str(out / ("video_{source}.mp4" if sources > 1 else "video.mp4"))]
    command += ["--detector-model", detector_for(args, video)]
    if sr_workers > 1:  # each worker runs the network on one core, on small batches (less memory, same speed)
        command += ["--sr-workers", str(sr_workers), "--threads", "1", "--max-batch", str(WORKER_MAX_BATCH)]
    elif threads or args.threads:
        command += ["--threads", str(threads or args.threads)]
    return command + (["--pipelined"] if pipelined else [])


def _launch(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait(proc: subprocess.Popen, summary: Path) -> dict:
    _, err = proc.communicate(timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"runtime exited {proc.returncode}: {err[-1500:]}")
    return json.loads(summary.read_text())


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _row(name: str, summaries: list[dict], sources: int) -> dict:
    """One table row from the summaries of the processes of one way of running."""
    per_source = [s for summary in summaries for s in summary.get("sources", [summary])]
    wall = max(s["wall_s"] for s in summaries)
    frames = sum(s["frames"] for s in per_source)
    faces = sum(s["faces"] for s in per_source)
    p50 = [s["latency_ms"]["p50"] for s in per_source if s.get("latency_ms")]
    p95 = [s["latency_ms"]["p95"] for s in per_source if s.get("latency_ms")]
    return {"run": name, "sources": sources, "processes": len(summaries), "frames": frames, "faces": faces,
            "wall_s": round(wall, 2), "fps_per_source": round(frames / sources / wall, 2),
            "faces_per_s": round(faces / wall, 2), "latency_p50_ms": max(p50) if p50 else None,
            "latency_p95_ms": max(p95) if p95 else None,
            "peak_rss_mb": round(sum(s["peak_rss_mb"] or 0 for s in summaries), 1),
            "sr_batches": summaries[0].get("sr_batches"),
            "stages_ms": {k: v["mean_ms"] for k, v in summaries[0].get("stages_ms", {}).items()}}


def compare(args, video: Path, model: Path) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fsr-throughput-") as scratch:
        def run(name: str, sources: int = 1, processes: int = 1, pipelined: bool = False, sr_workers: int = 1,
                threads: int | None = None) -> None:
            outs = [Path(scratch) / f"{name}-{i}" for i in range(processes)]
            for out in outs:
                out.mkdir()
            start, cpu_before = time.perf_counter(), _children_cpu_s()
            procs = [_launch(_command(video, model, out, args, sources, pipelined, sr_workers, threads))
                     for out in outs]
            summaries = [_wait(proc, out / "summary.json") for proc, out in zip(procs, outs)]
            rows.append(_row(name, summaries, sources * processes))
            elapsed = time.perf_counter() - start  # with process start-up and model loads
            rows[-1]["elapsed_s"] = round(elapsed, 1)
            rows[-1]["cores_busy"] = round((_children_cpu_s() - cpu_before) / elapsed, 2)
            print(json.dumps(rows[-1]), flush=True)

        workers = f"{args.sr_workers} SR workers x 1 thread, max batch {WORKER_MAX_BATCH}"
        run("sequential")
        run("pipelined", pipelined=True)
        if args.sr_workers > 1:
            run(f"pipelined, {workers}", pipelined=True, sr_workers=args.sr_workers)
        for n in args.sources:
            if n > 1:
                run(f"{n} sources, 1 process", sources=n)
                if args.sr_workers > 1:
                    run(f"{n} sources, 1 process, {workers}", sources=n, sr_workers=args.sr_workers)
                run(f"{n} processes", processes=n)
                run(f"{n} processes x 1 thread", processes=n, threads=1)
    sequential = rows[0]
    pipelined = max((row for row in rows if row["run"].startswith("pipelined")), key=lambda row: row["faces_per_s"])
    stages = sequential["stages_ms"]
    sr_share = stages.get("sr", 0.0) / sum(stages.values()) if stages else None
    return {"sr_share_sequential": None if sr_share is None else round(sr_share, 3),
            # Overlapping the other stages with SR can at most remove them from the frame time, and only when
            # SR does not need the cores they use.
            "pipelining_bound": None if not sr_share else round(1 / sr_share, 3), "video": str(video), "model": str(model), "frames_per_source": args.frames,
            "detect_every": args.detect_every, "rows": rows,
            "pipelined_speedup": round(pipelined["faces_per_s"] / sequential["faces_per_s"], 3),
            "best_pipelined": pipelined["run"],
            "same_work": pipelined["faces"] == sequential["faces"] and pipelined["frames"] == sequential["frames"]}


def to_markdown(payload: dict) -> str:
    from .common import markdown_table

    r = payload["result"]
    headers = ["run", "sources", "processes", "FPS per source", "faces/s (total)", "latency p50 ms",
               "latency p95 ms", "peak RSS MB (sum)", "CPU cores busy", "wall s"]
    rows = [[row["run"], row["sources"], row["processes"], row["fps_per_source"], row["faces_per_s"],
             row["latency_p50_ms"], row["latency_p95_ms"], row["peak_rss_mb"], row.get("cores_busy", "-"),
             row["wall_s"]] for row in r["rows"]]
    return (f"# Throughput — {Path(r['model']).name} on {payload['machine'].get('gpu') or payload['machine']['cpu']} "
            f"({payload['machine']['cores']} cores)\n\n"
            f"Command: `{payload['command']}`  \nVideo `{Path(r['video']).name}`, {r['frames_per_source']} frames per "
            f"source, detection every {r['detect_every']} frames, every face through the network, H.264/MP4 "
            f"files written.\n\n"
            f"**Pipelined ({r.get('best_pipelined', 'pipelined')}) / sequential: {r['pipelined_speedup']}x** total "
            f"faces/s (same frames and faces: {r['same_work']}). In the sequential loop SR takes "
            f"{100 * r['sr_share_sequential']:.0f}% of the frame time, so overlapping the other stages with it gives "
            f"at most {r['pipelining_bound']}x; more needs SR itself to use the cores better (SR workers).\n\n"
            + markdown_table(headers, rows) +
            f"\nCPU cores busy: the runs' CPU time over their elapsed time (model loading included), out of "
            f"{payload['machine']['cores']}.\n"
            "\nLatency is from a frame leaving the decoder to its output being written; with files the readers run "
            "ahead until the queues are full, so the pipelined and multi-source latencies here include that "
            "queueing (a live camera drops frames instead).\n")


def plot(payload: dict, path: Path):
    from .common import pyplot, save_figure

    plt = pyplot()
    if plt is None:
        return None
    rows = payload["result"]["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh([row["run"] for row in rows][::-1], [row["faces_per_s"] for row in rows][::-1])
    ax.set_xlabel("faces/s, all sources together")
    return save_figure(fig, ax, path, "Throughput on the street video")
