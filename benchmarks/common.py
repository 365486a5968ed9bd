"""Shared helpers for the benchmark commands: machine tag, timing statistics, result files."""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

from runtime.cpu_int8 import cpu_name

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
# --quick runs never replace published results: they write here (ignored by git) unless --outdir is given.
QUICK_RESULTS_ROOT = Path(__file__).resolve().parent.parent / "runs" / "benchmarks-quick"


def gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def machine_info() -> dict:
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
    gpu = gpu_name()
    if gpu:
        info["gpu"] = gpu
    return info


def machine_tag(info: dict) -> str:
    """Folder name for a machine's results, e.g. `cpu-2core` or `gpu-nvidia-h100-80gb-hbm3`."""
    if info.get("gpu"):
        return "gpu-" + "-".join(info["gpu"].lower().replace("/", " ").split())
    return f"cpu-{info['cores']}core"


def detector_for(args, video: Path) -> str:
    """--detector-model, else the YuNet file of the shared folder the video comes from."""
    return str(args.detector_model or video.parents[2] / "models" / "face_detection_yunet_2023mar.onnx")


def time_calls(fn: Callable[[int], object], warmup: int, repeats: int, sync: Callable[[], None] = lambda: None) -> dict:
    """Call fn(i) `warmup` times, then time `repeats` calls (host clock, synchronised). Milliseconds."""
    for i in range(warmup):
        fn(i)
    sync()
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return summarize(times)


def summarize(times_ms: list[float]) -> dict:
    ordered = sorted(times_ms)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": statistics.median(ordered), "p95_ms": p95, "min_ms": ordered[0], "runs": len(ordered)}


def command_line() -> str:
    return "python -m " + " ".join([Path(sys.argv[0]).stem and _module_name()] + sys.argv[1:])


def _module_name() -> str:
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return spec.name if spec else Path(sys.argv[0]).stem


def write_results(kind: str, payload: dict, markdown: str, outdir: Path | None = None,
                  plot: Callable[[dict, Path], object] | None = None) -> Path:
    """Write `<kind>.json`, `<kind>.md` and (with `plot`) `<kind>.png` under results/<machine-tag>/,
    print the Markdown and the folder, and return the folder."""
    folder = Path(outdir) if outdir else RESULTS_ROOT / machine_tag(payload["machine"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kind}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (folder / f"{kind}.md").write_text(markdown)
    if plot is not None:
        plot(payload, folder / f"{kind}.png")
    print(markdown)
    print(f"results: {folder}")
    return folder


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend, or None (logged) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logging.getLogger("benchmarks").warning("matplotlib not installed: no plot (pip install -e '.[bench]')")
        return None
    return plt


def save_figure(fig, ax, path: Path, title: str) -> Path:
    ax.set_title(title, fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    return path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def add_face_split_args(parser, quick_faces: int) -> None:
    """The options of benchmarks that score on the UTK test split."""
    parser.add_argument("--quick", action="store_true", help=f"first {quick_faces} test faces")
    parser.add_argument("--limit", type=int, help="first K test faces (default: all 500)")
    parser.add_argument("--data", help="faces-utk folder (default: ../shared/data/faces-utk)")
    parser.add_argument("--cache", default=None, help="folder for the decoded-split cache")
    parser.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")


def run_and_report(kind: str, run: Callable, args, to_markdown: Callable[[dict], str],
                   plot: Callable[[dict, Path], object] | None = None) -> int:
    """The common `main` of a benchmark: logging, the payload (command, machine, results), the reports.
    Missing data (DataError) is one ERROR line and exit 2."""
    from training.data import DataError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    try:
        payload = {"command": command_line(), "machine": machine_info(), **run(args)}
    except DataError as err:
        logging.getLogger("benchmarks").error("%s", err)
        return 2
    write_results(kind, payload, to_markdown(payload), results_dir(args, payload), plot)
    return 0


def results_dir(args, payload: dict) -> Path | None:
    """--outdir; else None (the published folder), or for a --quick run its own folder under runs/."""
    if args.outdir is None and getattr(args, "quick", False):
        return QUICK_RESULTS_ROOT / machine_tag(payload["machine"])
    return args.outdir
