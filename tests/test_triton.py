"""Triton: repository writing (export.triton), the server launcher and the triton:// runtime backend.

The first part needs no server. The second runs the Triton Inference Server bundled in `nvidia-pytriton`
(CPU, Python backend) on 127.0.0.1 through `python -m runtime.triton_server`, with a PFSR model exported by
`export.build` (tiny config, random weights): outputs against local ONNX Runtime, the runtime on the street
video, three clients merged into larger batches, reconnection and SIGTERM. The server's environment is
created on first use (`runtime.triton_server.setup_env`, ~450 MB download, cached in ~/.cache/fsr-edge);
the tests skip, with the reason, only when it cannot be created or the server cannot start.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import long_frame_folder, wait_until
from tests.ports import free_port

from conftest import REPO_ROOT, write_engine_artifact
from export import ExportError
from export.triton import RepositoryOptions, write_repository
from runtime.artifact import load_artifact
from runtime.backends import create_backend, infer_batched, load_model, resolve_backend_name
from runtime.backends.triton_backend import TritonBackend, TritonTarget, artifact_from_config
from runtime.errors import BackendError, ModelArtifactError
from runtime.triton_server import TritonServerError, default_env, open_env, setup_env

# --- the repository writer -----------------------------------------------------------------------------


def test_python_platform_repository_from_the_manifest(make_artifact, tmp_path):
    folder = write_repository(make_artifact("m", batch_max=16), tmp_path / "repo",
                              RepositoryOptions("python", instances=2, queue_delay_us=500))
    config = (folder / "config.pbtxt").read_text()
    assert folder.name == "m" and sorted(p.name for p in (folder / "1").iterdir()) == ["model.onnx", "model.py"]
    assert 'backend: "python"' in config and "max_batch_size: 16" in config
    assert '{ name: "lr" data_type: TYPE_FP32 dims: [ 3, 16, 16 ] }' in config
    assert '{ name: "sr" data_type: TYPE_FP32 dims: [ 3, 128, 128 ] }' in config
    assert "preferred_batch_size: [ 8, 16 ]" in config and "max_queue_delay_microseconds: 500" in config
    assert "count: 2 kind: KIND_CPU" in config and '"onnx_file" value { string_value: "model.onnx" }' in config
    assert '"allow_spinning" value { string_value: "0" }' in config
    deepstream = (tmp_path / "repo" / "m.nvinferserver.txt").read_text()
    assert 'model_name: "m"' in deepstream and "PROCESS_MODE_CLIP_OBJECTS" in deepstream


def test_onnxruntime_platform_without_dynamic_batching(make_artifact, tmp_path):
    folder = write_repository(make_artifact("m"), tmp_path / "repo",
                              RepositoryOptions("onnxruntime", name="sr_x8", dynamic_batching=False))
    config = (folder / "config.pbtxt").read_text()
    assert folder.name == "sr_x8" and [p.name for p in (folder / "1").iterdir()] == ["model.onnx"]
    assert 'backend: "onnxruntime"' in config and "dynamic_batching" not in config
    write_repository(make_artifact("m"), tmp_path / "repo", RepositoryOptions("python", name="sr_x8"))
    write_repository(make_artifact("m"), tmp_path / "repo", RepositoryOptions("onnxruntime", name="sr_x8"))
    assert [p.name for p in (folder / "1").iterdir()] == ["model.onnx"]  # the rewrite left no model.py behind


def test_tensorrt_plan_is_the_engine_built_for_the_target(make_artifact, tmp_path):
    manifest = make_artifact("m")
    write_engine_artifact(manifest, version="10.3.0.26", compute_capability="8.7", name="m_orin.engine")
    write_engine_artifact(manifest, version="10.8.0.43", compute_capability="9.0", engine_bytes=b"h100 plan",
                          name="m_h100.engine")
    options = RepositoryOptions("tensorrt", trt_version="10.8.0", compute_capability="9.0")
    folder = write_repository(manifest, tmp_path / "repo", options)
    assert (folder / "1" / "model.plan").read_bytes() == b"h100 plan"
    config = (folder / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in config and "kind: KIND_GPU" in config


def test_tensorrt_engine_for_another_target_is_refused_with_every_reason(make_artifact, tmp_path):
    manifest = make_artifact("m")
    write_engine_artifact(manifest, version="10.3.0.26", compute_capability="8.7")
    with pytest.raises(ExportError, match="TensorRT 10.3.0.26, the server has 10.8.0"):
        write_repository(manifest, tmp_path / "repo", RepositoryOptions("tensorrt", trt_version="10.8.0",
                                                                        compute_capability="8.7"))
    with pytest.raises(ExportError, match="compute capability 8.7, the server's GPU is 9.0"):
        write_repository(manifest, tmp_path / "repo", RepositoryOptions("tensorrt", trt_version="10.3.0",
                                                                        compute_capability="9.0"))
    with pytest.raises(ExportError, match="--trt-version"):
        write_repository(manifest, tmp_path / "repo", RepositoryOptions("tensorrt"))


def test_tensorrt_without_an_engine_and_bad_batching_are_refused(make_artifact, tmp_path):
    with pytest.raises(ExportError, match="no TensorRT engine"):
        write_repository(make_artifact("m"), tmp_path / "r", RepositoryOptions("tensorrt", trt_version="10.3.0",
                                                                               compute_capability="8.7"))
    with pytest.raises(ExportError, match="outside 1..32"):
        write_repository(make_artifact("m"), tmp_path / "r", RepositoryOptions(preferred_batches=(64,)))


@pytest.mark.parametrize("name", ["../victim", "a/b", "..", ".hidden", "/abs"])
def test_a_model_name_never_leaves_the_repository(make_artifact, tmp_path, name):
    victim = tmp_path / "victim" / "1"
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("not yours")
    with pytest.raises(ExportError, match="a model name is 1-128 letters"):
        write_repository(make_artifact("m"), tmp_path / "repo", RepositoryOptions("python", name=name))
    assert (victim / "keep.txt").read_text() == "not yours" and not (tmp_path / "repo").exists()


def test_an_existing_folder_not_written_here_is_not_replaced(make_artifact, tmp_path):
    other = tmp_path / "repo" / "theirs" / "1"
    other.mkdir(parents=True)
    (other / "model.plan").write_bytes(b"their engine")
    with pytest.raises(ExportError, match="was not written by export.triton"):
        write_repository(make_artifact("m"), tmp_path / "repo", RepositoryOptions("python", name="theirs"))
    assert (other / "model.plan").read_bytes() == b"their engine"


def test_cli_error_is_one_line_and_exit_2(tmp_path, capsys):
    from export.triton import main

    assert main(["--model", str(tmp_path / "missing.json"), "--repository", str(tmp_path / "r")]) == 2


# --- the runtime side without a server ------------------------------------------------------------------
def test_triton_urls():
    assert TritonTarget.parse("triton://10.0.0.5/pfsr") == TritonTarget("10.0.0.5", 8001, "pfsr", "")
    assert TritonTarget.parse("triton://h:9001/pfsr/2").url == "triton://h:9001/pfsr/2"
    for bad in ("triton://host", "triton://host:port/m", "triton:///m"):
        with pytest.raises(ModelArtifactError, match="expected triton://HOST"):
            TritonTarget.parse(bad)


def test_server_config_becomes_a_runtime_artifact():
    config = {"name": "m", "max_batch_size": 16,
              "input": [{"name": "lr", "data_type": "TYPE_FP32", "dims": ["3", "32", "32"]}],
              "output": [{"name": "sr", "data_type": "TYPE_FP32", "dims": ["3", "128", "128"]}],
              "dynamic_batching": {"preferred_batch_size": [4, 8]},
              "parameters": {"fsr_edge_model": {"string_value": "pfsr_x4"}}}
    artifact = artifact_from_config(config, TritonTarget("h", 8001, "m"))
    assert artifact.input_hw == (32, 32) and artifact.output_hw == (128, 128)
    assert str(artifact.batch) == "1:8:16" and artifact.model_name == "pfsr_x4"
    assert resolve_backend_name("auto", artifact) == "triton"


def test_triton_backend_needs_a_triton_model(sr_artifact):
    with pytest.raises(BackendError, match="triton://HOST:PORT/NAME"):
        resolve_backend_name("triton", load_artifact(sr_artifact))


def test_missing_server_is_one_clear_line():
    pytest.importorskip("tritonclient.grpc", reason="the [triton] extra (tritonclient[grpc]) is not installed")
    with pytest.raises(BackendError, match=r"not reachable .* `python -m runtime.triton_server") as err:
        load_model(f"triton://127.0.0.1:{free_port()}/pfsr")
    assert "\n" not in str(err.value)


def test_launcher_without_its_environment_says_how_to_create_it(tmp_path):
    with pytest.raises(TritonServerError, match="--setup"):
        open_env(tmp_path / "no-env")


# --- against the real server ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_env():
    """The server's environment, created on first use; skip with the reason where that is impossible."""
    pytest.importorskip("tritonclient.grpc", reason="the [triton] extra (tritonclient[grpc]) is not installed")
    try:
        return open_env(default_env())
    except TritonServerError:
        pass
    try:
        return setup_env(default_env())
    except TritonServerError as err:
        pytest.skip(f"the bundled Triton server cannot be installed here: {err}")


@pytest.fixture(scope="module")
def pfsr_onnx(tmp_path_factory):
    """A real project model: PFSR, tiny config, random weights, through the exporter."""
    from export.build import main as build

    out = tmp_path_factory.mktemp("pfsr")
    assert build(["--model", "pfsr", "--config", "tiny", "--random-init", "--outdir", str(out)]) == 0
    return out / "pfsr_fp32.json"


@pytest.fixture(scope="module")
def repository(pfsr_onnx, tmp_path_factory):
    """One repository, three configurations of the same model: the default, a longer queue delay (so three
    clients' requests reliably meet), and no dynamic batching."""
    repo = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(pfsr_onnx, repo, RepositoryOptions("python"))
    write_repository(pfsr_onnx, repo, RepositoryOptions("python", name="pfsr_wait", queue_delay_us=50_000))
    write_repository(pfsr_onnx, repo, RepositoryOptions("python", name="pfsr_single", dynamic_batching=False))
    return repo


class Launcher:
    """`python -m runtime.triton_server` as a subprocess, the way a user starts it."""

    def __init__(self, repository: Path, ports: tuple[int, int] | None = None):
        self.grpc, self.http = ports or (free_port(), free_port())
        self.log = repository.parent / f"launcher-{self.grpc}-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "runtime.triton_server", "--repository", str(repository),
                   "--grpc-port", str(self.grpc), "--http-port", str(self.http), "--metrics-port", str(free_port()),
                   "--log-file", str(self.log.with_suffix(".server.log"))]
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=open(self.log, "w"),
                                        text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        line = self.process.stdout.readline()  # "READY ..." or nothing when it failed
        if not line.startswith("READY"):
            self.process.wait(30)
            pytest.skip(f"the bundled Triton server did not start: {self.log.read_text()[-800:]}")

    def url(self, model: str) -> str:
        return f"triton://127.0.0.1:{self.grpc}/{model}"

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


@pytest.fixture(scope="module")
def server(server_env, repository):
    launcher = Launcher(repository)
    yield launcher
    launcher.stop()


def test_server_outputs_equal_local_onnxruntime(server, pfsr_onnx):
    faces = np.random.default_rng(1).random((40, 3, 16, 16), dtype=np.float32)  # 40 > max batch 32: 2 requests
    remote = load_model(server.url("pfsr_fp32"))
    assert remote.inputs == tuple(s for s in remote.inputs if s.shape == ("N", 3, 16, 16))
    with create_backend("auto", remote) as triton, create_backend("onnxruntime", load_artifact(pfsr_onnx)) as local, \
            TritonBackend(remote, shared_memory=False) as over_grpc:
        assert triton.name == "triton" and triton.max_batch == 32
        assert triton.shared is not None and over_grpc.shared is None  # a local server: shared memory by default
        served, expected = infer_batched(triton, faces)["sr"], infer_batched(local, faces)["sr"]
        sent_over_grpc = infer_batched(over_grpc, faces)["sr"]
    assert served.shape == sent_over_grpc.shape == (40, 3, 128, 128)
    assert np.abs(served - expected).max() <= 1e-5 and np.abs(sent_over_grpc - expected).max() <= 1e-5


def test_missing_model_lists_what_the_server_has(server):
    with pytest.raises(BackendError, match=r"'nope' is not loaded .*\(it has: pfsr_fp32, pfsr_single, pfsr_wait\)"):
        load_model(server.url("nope"))


def test_runtime_enhances_the_street_video_through_the_server(server, shared_dir, detector_path, tmp_path):
    from runtime.enhance import main

    summary_path = tmp_path / "summary.json"
    code = main(["--source", str(shared_dir / "data/scenes/street-video-1080p.mp4"), "--model",
                 server.url("pfsr_fp32"), "--max-frames", "6", "--headless", "--enhance-all", "--output",
                 str(tmp_path / "out.mp4"), "--detector-model", str(detector_path), "--summary", str(summary_path)])
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary["frames"] == 6 and summary["backends"] == ["triton"]
    assert summary["faces_enhanced"] >= 10 and (tmp_path / "out.mp4").stat().st_size > 0


def _model_counts(client, model: str) -> tuple[int, int]:
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def _counts_since(client, model: str, before: tuple[int, int], faces: int) -> tuple[int, int]:
    """(inferences, executions) since `before`; the server updates its statistics just after it answers, so
    wait (up to 10 s) until all `faces` are counted."""
    deadline = time.monotonic() + 10
    while True:
        now = _model_counts(client, model)
        if now[0] - before[0] >= faces or time.monotonic() > deadline:
            return now[0] - before[0], now[1] - before[1]
        time.sleep(0.05)


def test_three_clients_are_merged_into_larger_batches(server):
    import tritonclient.grpc as grpcclient

    stats_client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    before = _model_counts(stats_client, "pfsr_wait")
    artifact = load_model(server.url("pfsr_wait"))
    faces = np.random.default_rng(2).random((1, 3, 16, 16), dtype=np.float32)
    errors = []

    def client():
        try:
            with create_backend("triton", artifact) as backend:
                for _ in range(10):
                    backend.infer({"lr": faces})
        except Exception as err:  # reported below, not lost in the thread
            errors.append(err)

    threads = [threading.Thread(target=client) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    inferences, executions = _counts_since(stats_client, "pfsr_wait", before, 30)
    assert errors == [] and inferences == 30
    assert executions < inferences, f"{executions} executions for {inferences} faces: no request was merged"


def test_no_dynamic_batching_runs_each_request_alone(server):
    import tritonclient.grpc as grpcclient

    stats_client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    with create_backend("triton", load_model(server.url("pfsr_single"))) as backend:
        before = _model_counts(stats_client, "pfsr_single")
        backend.infer({"lr": np.zeros((3, 3, 16, 16), np.float32)})
    assert _counts_since(stats_client, "pfsr_single", before, 3) == (3, 1)


def test_reconnects_after_a_restart_and_stops_cleanly_on_sigterm(server_env, repository):
    first = Launcher(repository)
    artifact = load_model(first.url("pfsr_fp32"))
    faces = np.zeros((2, 3, 16, 16), np.float32)
    with TritonBackend(artifact, retry_delays_s=(0.5,) * 60) as patient, TritonBackend(artifact, ()) as impatient:
        patient.infer({"lr": faces})
        assert first.stop() == 0  # SIGTERM: the launcher stops the server and exits 0
        with pytest.raises(BackendError, match="triton: triton://.* failed: .*UNAVAILABLE"):
            impatient.infer({"lr": faces})
        restarted = []  # the server comes back on the same ports while the backend retries
        thread = threading.Thread(target=lambda: restarted.append(Launcher(repository, (first.grpc, first.http))))
        thread.start()
        out = patient.infer({"lr": faces})
        thread.join(120)
    assert out["sr"].shape == (2, 3, 128, 128) and patient.reconnects >= 1
    assert restarted[0].stop() == 0


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of the TCP sockets listening on `port` (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_the_server_listens_on_the_loopback_only(server):
    # 127.0.0.1, ::1 and ::ffff:127.0.0.1 as /proc/net/tcp{,6} print them
    loopback = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}
    for port in (server.grpc, server.http):
        addresses = _listening_addresses(port)
        assert addresses and addresses <= loopback, (port, addresses)


def test_shared_memory_and_model_loading_need_the_admin_key(server):
    """A client without this user's key can neither list, unregister nor register shared memory, nor load
    models; the runtime, with it, still passes its tensors through shared memory."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from runtime.backends.triton_backend import GRPC_ADMIN_KEY_HEADER, admin_key

    stranger = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    for call in (lambda: stranger.get_system_shared_memory_status(),
                 lambda: stranger.unregister_system_shared_memory(),
                 lambda: stranger.register_system_shared_memory("x", "/x", 64),
                 lambda: stranger.load_model("pfsr_fp32")):
        with pytest.raises(InferenceServerException, match="(?i)restricted|unavailable|permission|key"):
            call()
    with create_backend("triton", load_model(server.url("pfsr_fp32"))) as backend:
        assert backend.shared is not None
        regions = stranger.get_system_shared_memory_status(headers={GRPC_ADMIN_KEY_HEADER: admin_key()}, as_json=True)
        assert any(name.startswith("fsr_") for name in json.dumps(regions).split('"'))
        assert backend.infer({"lr": np.zeros((2, 3, 16, 16), np.float32)})["sr"].shape == (2, 3, 128, 128)


def test_a_stop_request_ends_a_request_to_a_hung_server_within_two_seconds(server_env, repository):
    """The server stopped (SIGSTOP), not dead: the request waits; a stop request abandons it at once."""
    from runtime.stopping import STOP_REQUESTED, Cancelled

    launcher = Launcher(repository)
    server_pid = _server_pid(launcher.process.pid)
    backend = TritonBackend(load_model(launcher.url("pfsr_fp32")), timeout_s=120).activate()
    try:
        os.kill(server_pid, signal.SIGSTOP)
        threading.Timer(1.0, STOP_REQUESTED.set).start()
        start = time.monotonic()
        with pytest.raises(Cancelled, match="asked to stop"):
            backend.infer({"lr": np.zeros((1, 3, 16, 16), np.float32)})
        assert time.monotonic() - start < 1.0 + 2.0
    finally:
        STOP_REQUESTED.clear()
        os.kill(server_pid, signal.SIGCONT)
        backend.deactivate()
        launcher.stop()


@pytest.mark.shared
def test_sigterm_ends_a_run_within_two_seconds_while_its_server_hangs(server_env, repository, shared_dir,
                                                                      detector_path, tmp_path):
    """runtime.enhance through a server that is stopped (SIGSTOP) mid-run: SIGTERM ends the run within 2 s,
    with exit code 143 and a summary of the frames done (Docker and systemd stop timeouts are 10 s and 90 s)."""
    frames = long_frame_folder(shared_dir / "data/scenes/street-video-1080p.mp4", tmp_path / "frames")
    launcher = Launcher(repository)
    server_pid = _server_pid(launcher.process.pid)
    summary, events = tmp_path / "summary.json", tmp_path / "events.jsonl"
    run = subprocess.Popen([sys.executable, "-m", "runtime.enhance", "--source", str(frames), "--model",
                            launcher.url("pfsr_fp32"), "--enhance-all", "--headless", "--detector-model",
                            str(detector_path), "--summary", str(summary), "--events", str(events),
                            "--remote-timeout", "120", "-q"],
                           cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: events.exists() and events.stat().st_size > 0 or run.poll() is not None, 120,
                   "the run's first event")
        assert run.poll() is None, "the run ended before any face was enhanced"
        os.kill(server_pid, signal.SIGSTOP)
        time.sleep(3)  # the run now waits for an answer that does not come
        assert run.poll() is None, "the run ended while its server was stopped"
        start = time.monotonic()
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=60)
        took = time.monotonic() - start
    finally:
        os.kill(server_pid, signal.SIGCONT)
        run.kill()
        launcher.stop()
    assert run.returncode == 143, stderr[-2000:]
    assert took < 2.0, f"the run took {took:.1f} s to end"
    assert json.loads(summary.read_text())["stopped_by_signal"] == signal.SIGTERM


def _server_pid(launcher_pid: int) -> int:
    """The tritonserver child of a launcher process (Linux /proc)."""
    children = Path(f"/proc/{launcher_pid}/task/{launcher_pid}/children").read_text().split()
    for pid in map(int, children):
        if "tritonserver" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
            return pid
    raise AssertionError(f"no tritonserver under pid {launcher_pid}: {children}")


def test_benchmark_runs_and_writes_its_reports(server_env, pfsr_onnx, tmp_path):
    from benchmarks.triton import main

    assert main(["--model", str(pfsr_onnx), "--seconds", "0.5", "--rounds", "1", "--clients", "1,2",
                 "--outdir", str(tmp_path)]) == 0
    report = tmp_path / f"triton_{pfsr_onnx.stem}.json"
    rows = {(r["mode"], r["clients"]): r for r in json.loads(report.read_text())["rows"]}
    assert len(rows) == 5 and all(r["requests"] > 0 and r["faces_per_s"] > 0 for r in rows.values())
    assert rows[("triton, dynamic batching off", 2)]["mean_batch"] == 1
    assert report.with_suffix(".md").read_text().count("| triton, dynamic batching") == 4
