"""How SR throughput scales with the CPU threads it gets: one ONNX Runtime session with 1..N intra-op threads,
and N threads each running their own 1-thread share of one session (frame-level parallelism, what a pipeline
with several SR workers would do). Tells whether a CPU has room left for pipelining beside the network.

    python -m benchmarks.cpu_scaling --model artifacts/pfsr_fp32.json [--faces 6] [--seconds 8]
"""
from __future__ import annotations

import argparse
import os
import threading
import time

import numpy as np

from runtime.artifact import load_artifact
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend

from .common import command_line, machine_info, write_results


def faces_per_second(backend: OnnxRuntimeBackend, batch: np.ndarray, seconds: float, workers: int = 1) -> float:
    """Faces/s of `workers` threads calling the backend back to back for `seconds` (after one warm-up call)."""
    name = backend.artifact.image_input.name
    backend.infer({name: batch})
    done = [0] * workers

    def work(index: int) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            backend.infer({name: batch})
            done[index] += len(batch)

    start = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - start)


def run(args) -> dict:
    artifact = load_artifact(args.model)
    side = artifact.input_hw[0]
    batch = np.random.default_rng(0).random((args.faces, 3, side, side), dtype=np.float32)
    rows, cores = [], os.cpu_count() or 1
    for threads in range(1, cores + 1):
        with OnnxRuntimeBackend(artifact, ["CPUExecutionProvider"], intra_op_threads=threads) as backend:
            rows.append({"setup": f"1 session, {threads} intra-op thread(s)", "threads": threads,
                         "faces_per_s": faces_per_second(backend, batch, args.seconds)})
    if cores > 1:
        with OnnxRuntimeBackend(artifact, ["CPUExecutionProvider"], intra_op_threads=1) as backend:
            rows.append({"setup": f"{cores} workers x 1 intra-op thread", "threads": cores,
                         "faces_per_s": faces_per_second(backend, batch, args.seconds, workers=cores)})
    single = rows[0]["faces_per_s"]
    for row in rows:
        row["speedup"] = row["faces_per_s"] / single
    return {"command": command_line(), "machine": machine_info(), "model": str(args.model),
            "faces_per_call": args.faces, "seconds": args.seconds, "rows": rows}


def to_markdown(payload: dict) -> str:
    machine = payload["machine"]
    lines = [f"# CPU scaling of SR — {payload['model']} on {machine['cpu']} ({machine['cores']} cores)", "",
             f"Command: `{payload['command']}`  ",
             f"Each call carries {payload['faces_per_call']} faces (a street-video frame's worth); every row runs "
             f"{payload['seconds']} s. A second core that adds little to SR leaves nothing for pipelining to use.", "",
             "| setup | threads | faces/s | vs 1 thread |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['setup']} | {r['threads']} | {r['faces_per_s']:.1f} | {r['speedup']:.2f}x |"
              for r in payload["rows"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="an exported artifact (manifest .json or .onnx)")
    p.add_argument("--faces", type=int, default=6, help="faces per call")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each measurement")
    p.add_argument("--outdir", default=None)
    args = p.parse_args(argv)
    if args.faces < 1 or args.seconds <= 0:
        p.error("--faces must be >= 1 and --seconds > 0")
    payload = run(args)
    name = os.path.splitext(os.path.basename(args.model))[0]
    write_results(f"cpu_scaling_{name}", payload, to_markdown(payload), args.outdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
