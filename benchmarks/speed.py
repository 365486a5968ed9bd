"""`python -m benchmarks.speed`: SR latency and throughput per backend x precision x batch x steps.

    python -m benchmarks.speed --quick            # tiny config, < 1 min on a 2-core CPU (CI runs this)
    python -m benchmarks.speed                    # the paper's DIC config, CPU batches 1, 4
    python -m benchmarks.speed --weights models/weights/dic_utk_cpu_demo.safetensors

Each backend runs the same unrolled model: PyTorch eager (the reference) and ONNX Runtime on the
exported artifact (CPU; CUDA when its provider is present). After warm-up, each configuration is
timed `--repeats` times over several rotating input sets; medians and p95 are reported, with
faces/s, the model's FLOPs per face and the achieved GFLOP/s. On CPU the ONNX Runtime / PyTorch
speed ratio comes from the same run. Results: benchmarks/results/<machine>/speed_<model>[_<config>].{json,md,png}.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from .common import (command_line, machine_info, markdown_table, pyplot, results_dir, save_figure, time_calls,
                     write_results)

log = logging.getLogger("benchmarks.speed")
INPUT_SETS = 3  # rotate inputs so repeated runs do not see the same data


def flops_per_face(model, steps: int, landmarks: bool = False) -> float:
    """FLOPs (2 x multiply-adds) of one face through `steps` unrolled steps, counted on the meta
    device: shapes only, no arithmetic."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    side = model_input_side(model)
    shadow = copy.deepcopy(model).to("meta").requires_grad_(False)  # the counter's module hooks trip over
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # parameters that need grad (Panini)
        shadow.unroll(torch.empty(1, 3, side, side, device="meta"), steps, last_heatmap=landmarks)
    return float(counter.get_total_flops())


def model_input_side(model) -> int:
    """The LR side the model takes (16 for most; Panini and the x4 PFSR declare theirs in the config)."""
    config = model.config
    return getattr(config, "in_size", None) or getattr(config, "input_size", None) or 16


def _inputs(batch: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    return [rng.random((batch, 3, size, size), dtype=np.float32) for _ in range(INPUT_SETS)]


def torch_runner(model, steps: int | None, device: str, half: bool, input_size: int):
    import torch

    from export.onnx_export import inference_form

    net = inference_form(model).to(device)  # what gets exported (PFSR: BatchNorm folded)
    dtype = torch.float16 if half else torch.float32
    if half:
        net = net.half().to(memory_format=torch.channels_last)

    def prepare(batch):
        return [torch.from_numpy(x).to(device, dtype) for x in _inputs(batch, input_size)]

    def run(feeds, i):
        with torch.inference_mode():
            return net.unroll(feeds[i % len(feeds)], steps, last_heatmap=False)[0][-1]

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    return prepare, run, sync


def onnxruntime_runner(manifest_path: Path, provider: str, threads: int | None):
    """The runtime's ONNX Runtime backend on the exported artifact (the code path that ships)."""
    from runtime.artifact import load_artifact
    from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

    artifact = load_artifact(manifest_path)
    backend = OnnxRuntimeBackend(artifact, providers=[provider], intra_op_threads=threads).activate()
    name, size = artifact.image_input.name, artifact.input_hw[0]

    def prepare(batch):
        return _inputs(batch, size)

    def run(feeds, i):
        return backend.infer({name: feeds[i % len(feeds)]})

    return prepare, run, lambda: None


def available_backends(wanted: list[str]) -> list[tuple[str, str]]:
    """(backend, precision) pairs that can run on this machine."""
    import onnxruntime as ort
    import torch

    found = [("torch-cpu", "fp32"), ("onnxruntime-cpu", "fp32")]
    if torch.cuda.is_available():
        found += [("torch-cuda", "fp32"), ("torch-cuda", "fp16")]
    if "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available():
        found.append(("onnxruntime-cuda", "fp32"))
    return [pair for pair in found if pair[0] in wanted or pair[0].split("-")[0] in wanted]


def export_for_benchmark(model_name: str, config: str | None, weights: str | None, steps: int | None,
                         outdir: Path) -> Path:
    """Export the fp32 artifact; returns its manifest."""
    from export.build import build

    result = build(model_name, weights=weights, random_init=weights is None, config=config, steps=steps, outdir=outdir)
    return result.manifest_path


def run_benchmark(args) -> dict:
    import torch

    from models import create_model, model_io

    torch.set_num_threads(args.threads or torch.get_num_threads())
    model = create_model(args.model, config=args.config, weights=args.weights).eval()
    io = model_io(args.model, model.config)
    if args.steps and not io.is_recurrent:
        raise SystemExit(f"--steps: {args.model} is not recurrent; leave --steps out")
    steps_list = args.steps or [io.recurrent_steps]
    backends = available_backends(args.backends)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for steps in steps_list:
            flops = flops_per_face(model, steps)
            onnx_path = None
            for backend, precision in backends:
                if backend.startswith("onnxruntime") and onnx_path is None:
                    onnx_path = export_for_benchmark(args.model, args.config, args.weights, steps, Path(scratch))
                if backend.startswith("torch"):
                    device = "cuda" if backend.endswith("cuda") else "cpu"
                    prepare, run, sync = torch_runner(model, steps, device, precision == "fp16", io.input_size)
                else:
                    provider = "CUDAExecutionProvider" if backend.endswith("cuda") else "CPUExecutionProvider"
                    prepare, run, sync = onnxruntime_runner(onnx_path, provider, args.threads)
                for batch in args.batches:
                    feeds = prepare(batch)
                    stats = time_calls(lambda i: run(feeds, i), args.warmup, args.repeats, sync)
                    faces_per_s = batch / (stats["median_ms"] / 1e3)
                    rows.append({"backend": backend, "precision": precision, "steps": steps or "-", "batch": batch,
                                 **stats, "faces_per_s": faces_per_s, "gflop_per_face": flops / 1e9,
                                 "achieved_gflops": flops * faces_per_s / 1e9})
                    log.info("%-17s %s steps=%s batch=%-3d median %.1f ms  %.2f faces/s", backend, precision,
                             steps, batch, stats["median_ms"], faces_per_s)
            model.to("cpu").float()
    return {"rows": rows, "ratios": onnxruntime_vs_torch(rows)}


def onnxruntime_vs_torch(rows: list[dict]) -> list[dict]:
    """Speed-up of ONNX Runtime over PyTorch eager for each (device, steps, batch) measured in this run."""
    by_key = {(r["backend"], r["precision"], r["steps"], r["batch"]): r for r in rows}
    ratios = []
    for (backend, precision, steps, batch), row in by_key.items():
        if not backend.startswith("onnxruntime"):
            continue
        device = backend.split("-")[1]
        reference = by_key.get((f"torch-{device}", precision, steps, batch))
        if reference:
            ratios.append({"device": device, "steps": steps, "batch": batch,
                           "onnxruntime_over_torch_speedup": reference["median_ms"] / row["median_ms"]})
    return ratios


def to_markdown(payload: dict) -> str:
    m = payload["machine"]
    what = payload["model"] + (f" ({payload['config']})" if payload["config"] else "")
    text = [f"# Speed — {what} on {m.get('gpu') or m['cpu']} ({m['cores']} cores)\n",
            f"Command: `{payload['command']}`  \nModel: {payload['model']} config `{payload['config'] or 'stored in the weights'}`, "
            f"warm-up {payload['warmup']}, {payload['repeats']} timed runs, medians.\n"]
    headers = ["backend", "precision", "steps", "batch", "median ms", "p95 ms", "faces/s", "GFLOP/face", "GFLOP/s"]
    rows = [[r["backend"], r["precision"], r["steps"], r["batch"], r["median_ms"], r["p95_ms"], r["faces_per_s"],
             r["gflop_per_face"], r["achieved_gflops"]] for r in payload["rows"]]
    text.append(markdown_table(headers, rows))
    if payload["ratios"]:
        text.append("\nONNX Runtime speed-up over PyTorch eager (same run):\n")
        text.append(markdown_table(["device", "steps", "batch", "speed-up"],
                                   [[r["device"], r["steps"], r["batch"], r["onnxruntime_over_torch_speedup"]]
                                    for r in payload["ratios"]]))
    return "\n".join(text)


def plot(payload: dict, path: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    series = sorted({(r["backend"], r["precision"], r["steps"]) for r in payload["rows"]})
    for backend, precision, steps in series:
        pts = [(r["batch"], r["faces_per_s"]) for r in payload["rows"]
               if (r["backend"], r["precision"], r["steps"]) == (backend, precision, steps)]
        ax.plot(*zip(*pts), marker="o", label=f"{backend} {precision} {steps} steps")
    ax.set_xlabel("batch")
    ax.set_ylabel("faces / s")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=7)
    machine = payload["machine"].get("gpu") or payload["machine"]["cpu"]
    return save_figure(fig, ax, path, f"{payload['model']} ({payload['config']}) on {machine}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny config, batches 1 and 4, few repeats (< 1 min on CPU)")
    p.add_argument("--model", default="dic")
    p.add_argument("--config", default=None, help="architecture config (default: the paper's; tiny with --quick)")
    p.add_argument("--weights", help="weights to benchmark (speed does not depend on them; default: random init)")
    p.add_argument("--steps", type=lambda s: [int(v) for v in s.split(",")], help="comma list, e.g. 1,2,4")
    p.add_argument("--batches", type=lambda s: [int(v) for v in s.split(",")], help="comma list, e.g. 1,8,32,64")
    p.add_argument("--backends", type=lambda s: s.split(","), default=["torch", "onnxruntime"])
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch and ONNX Runtime")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    args = p.parse_args(argv)
    gpu = _has_cuda()
    if args.config is None and not args.weights:  # with --weights, the config stored in them is used
        args.config = "tiny" if args.quick else "default"
    args.batches = args.batches or ([1, 4] if args.quick else ([1, 8, 32, 64] if gpu else [1, 4]))
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.repeats = args.repeats or (5 if args.quick else 20)
    return args


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    args = parse_args(argv)
    payload = {"command": command_line(), "machine": machine_info(), "model": args.model, "config": args.config,
               "weights": args.weights, "warmup": args.warmup, "repeats": args.repeats, "threads": args.threads}
    payload.update(run_benchmark(args))
    # speed_<model> for shipped/given weights, speed_<model>_<config> for a random-init config
    kind = f"speed_{args.model}" if args.weights else f"speed_{args.model}_{args.config}"
    write_results(kind, payload, to_markdown(payload), results_dir(args, payload), plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
