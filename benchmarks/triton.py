"""`python -m benchmarks.triton`: faces/s and latency of one Triton server for 1, 2, 4 concurrent clients.

    python -m export.build --model pfsr --outdir artifacts             # the shipped weights
    python -m benchmarks.triton --model artifacts/pfsr_fp32.json

Writes a repository with two configurations of the model (dynamic batching on / off, Python backend with
ONNX Runtime on CPU), starts the bundled server with `runtime.triton_server`, and lets N client threads
(each its own gRPC connection through the runtime's triton backend) send requests of --faces-per-request
faces for --seconds each. Reported per row: faces/s over the wall time, request latency p50/p95, and the
mean batch the server executed (its inference_count / execution_count). The same faces through local ONNX
Runtime in this process (one client) are the reference. Results: benchmarks/results/<machine>/triton.*.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .common import command_line, machine_info, markdown_table, pyplot, write_results

MODES = {"dynamic": True, "none": False}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def drive(make_backend, clients: int, faces: np.ndarray, seconds: float, warmup: int = 3) -> tuple[list[float], float]:
    """`clients` threads, each with its own backend, sending `faces` until `seconds` have passed; returns every
    request latency (ms) and the wall time (s)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[Exception] = []
    start_line = threading.Barrier(clients + 1)

    def client(number: int) -> None:
        try:
            with make_backend() as backend:
                name = backend.artifact.image_input.name
                for _ in range(warmup):
                    backend.infer({name: faces})
                start_line.wait()
                end = time.perf_counter() + seconds
                while time.perf_counter() < end:
                    begin = time.perf_counter()
                    backend.infer({name: faces})
                    latencies[number].append((time.perf_counter() - begin) * 1e3)
        except Exception as err:  # raised after the threads are joined
            errors.append(err)
            start_line.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    start_line.wait()
    begin = time.perf_counter()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return [ms for per_client in latencies for ms in per_client], time.perf_counter() - begin


def server_counts(address: str, model: str) -> tuple[int, int]:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(address)
    try:
        stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


class Tally:
    """One configuration over all rounds: latencies, wall time, per-round faces/s, server counts."""

    def __init__(self, mode: str, clients: int):
        self.mode, self.clients = mode, clients
        self.latencies: list[float] = []
        self.wall = 0.0
        self.round_rates: list[float] = []
        self.inferences = self.executions = 0

    def add(self, latencies: list[float], wall: float, faces_per_request: int, counts=(0, 0)) -> None:
        self.latencies += latencies
        self.wall += wall
        self.round_rates.append(round(len(latencies) * faces_per_request / wall, 1))
        self.inferences += counts[0]
        self.executions += counts[1]

    def row(self, faces_per_request: int) -> dict:
        faces = len(self.latencies) * faces_per_request
        return {"mode": self.mode, "clients": self.clients, "requests": len(self.latencies), "faces": faces,
                "wall_s": round(self.wall, 2), "faces_per_s": round(faces / self.wall, 1),
                "faces_per_s_rounds": self.round_rates, "p50_ms": round(statistics.median(self.latencies), 1),
                "p95_ms": round(percentile(self.latencies, 0.95), 1),
                "mean_batch": round(self.inferences / self.executions, 2) if self.executions else faces_per_request}


def run(args) -> dict:
    from export.triton import RepositoryOptions, write_repository
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend, load_model
    from runtime.triton_server import TritonServer

    artifact = load_artifact(args.model)
    faces = np.random.default_rng(0).random((args.faces_per_request, 3, *artifact.input_hw), dtype=np.float32)
    load_before = list(os.getloadavg())
    shared = not args.no_shared_memory
    local = Tally("local onnxruntime", 1)
    tallies = {(mode, n): Tally(f"triton, dynamic batching {'on' if on else 'off'}", n)
               for mode, on in MODES.items() for n in args.clients}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for mode, dynamic in MODES.items():
            write_repository(args.model, repo, RepositoryOptions(
                "python", name=f"sr_{mode}", dynamic_batching=dynamic, queue_delay_us=args.queue_delay_us,
                intra_op_threads=args.intra_op_threads, allow_spinning=args.allow_spinning))
        with TritonServer(repo, _free_port(), _free_port(), _free_port(), log_file=Path(tmp) / "server.log") as server:
            remote = {mode: load_model(f"triton://{server.grpc_url}/sr_{mode}") for mode in MODES}
            for number in range(args.rounds):  # interleaved, so a change in the machine's load hits every row
                local.add(*drive(lambda: create_backend("onnxruntime", artifact), 1, faces, args.seconds), len(faces))
                for (mode, clients), tally in tallies.items():
                    before = server_counts(server.grpc_url, f"sr_{mode}")
                    latencies, wall = drive(lambda: create_backend("triton", remote[mode], shared_memory=shared),
                                            clients, faces, args.seconds)
                    time.sleep(0.5)  # the server counts a request just after answering it
                    after = server_counts(server.grpc_url, f"sr_{mode}")
                    tally.add(latencies, wall, len(faces), (after[0] - before[0], after[1] - before[1]))
                print(f"round {number + 1}/{args.rounds} done", flush=True)
    rows = [t.row(len(faces)) for t in (local, *tallies.values())]
    return {"model": str(args.model), "model_name": artifact.model_name, "input_hw": list(artifact.input_hw),
            "faces_per_request": args.faces_per_request, "seconds": args.seconds, "rounds": args.rounds,
            "queue_delay_us": args.queue_delay_us, "intra_op_threads": args.intra_op_threads,
            "allow_spinning": args.allow_spinning, "shared_memory": shared, "load_average_before": load_before,
            "load_average_after": list(os.getloadavg()), "rows": rows}


def to_markdown(payload: dict) -> str:
    headers = ["server", "clients", "faces/s", "faces/s per round", "latency p50 ms", "latency p95 ms",
               "mean executed batch", "requests"]
    table = markdown_table(headers, [[r["mode"], r["clients"], r["faces_per_s"],
                                      " / ".join(str(v) for v in r["faces_per_s_rounds"]), r["p50_ms"], r["p95_ms"],
                                      r["mean_batch"], r["requests"]] for r in payload["rows"]])
    machine = payload["machine"]
    transport = "in system shared memory" if payload.get("shared_memory") else "inside the gRPC messages"
    loads = [", ".join(f"{v:.2f}" for v in payload[key]) for key in ("load_average_before", "load_average_after")]
    return (f"# Triton — one server, concurrent clients ({payload['model_name']}, {machine['cpu']}, "
            f"{machine['cores']} cores)\n\nCommand: `{payload['command']}`  \n"
            f"Bundled tritonserver 2.51 (nvidia-pytriton 0.7.0), Python backend running ONNX Runtime on CPU "
            f"({payload['intra_op_threads'] or 'default'} intra-op threads, spinning "
            f"{'on' if payload['allow_spinning'] else 'off'}), one model instance; server and client threads on the "
            f"same machine, tensors {transport}. Each request carries {payload['faces_per_request']} face(s); every configuration runs "
            f"{payload['seconds']} s in each of {payload['rounds']} interleaved rounds (faces/s over all rounds, "
            f"latency percentiles over all requests); dynamic batching waits up to {payload['queue_delay_us']} µs. "
            f"Mean executed batch = the server's inference_count / execution_count. Load average before / after: "
            f"{loads[0]} / {loads[1]} (anything else running shows here).\n\n{table}")


def plot(payload: dict, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    for mode in dict.fromkeys(r["mode"] for r in payload["rows"]):
        rows = [r for r in payload["rows"] if r["mode"] == mode]
        clients = [r["clients"] for r in rows]
        style = "s" if len(rows) == 1 else "o-"
        left.plot(clients, [r["faces_per_s"] for r in rows], style, label=mode)
        right.plot(clients, [r["p95_ms"] for r in rows], style, label=f"{mode} p95")
    left.set_xlabel("concurrent clients"), left.set_ylabel("faces/s"), left.legend(fontsize=7)
    right.set_xlabel("concurrent clients"), right.set_ylabel("request latency p95 (ms)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.set_xticks(sorted({r["clients"] for r in payload["rows"]}))
    fig.suptitle(f"Triton on {payload['machine']['cores']}-core CPU: {payload['model_name']}, "
                 f"{payload['faces_per_request']} face(s) per request", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _clients(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers, e.g. 1,2,4")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.triton", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, type=Path, help="artifact manifest (python -m export.build)")
    p.add_argument("--clients", type=_clients, default=[1, 2, 4])
    p.add_argument("--faces-per-request", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0, help="timed run per configuration and round")
    p.add_argument("--rounds", type=int, default=3, help="every configuration is run once per round, interleaved")
    p.add_argument("--queue-delay-us", type=int, default=2000)
    p.add_argument("--intra-op-threads", type=int, default=0, help="ONNX Runtime threads in the server (0: default)")
    p.add_argument("--allow-spinning", action="store_true", help="let ONNX Runtime's idle threads spin in the server")
    p.add_argument("--no-shared-memory", action="store_true", help="send tensors inside the gRPC messages")
    p.add_argument("--outdir", type=Path, help="default: benchmarks/results/<machine>/")
    args = p.parse_args(argv)
    payload = {"command": command_line(), "machine": machine_info(), **run(args)}
    # one report per model: triton_pfsr_fp32.md, triton_pfsr_x4_fp32.md, ...
    write_results(f"triton_{args.model.stem}", payload, to_markdown(payload), args.outdir, plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
