"""`python -m runtime.triton_server`: run the Triton Inference Server bundled in the `nvidia-pytriton` wheel.

    python -m runtime.triton_server --setup                       # once: the server's own environment
    python -m runtime.triton_server --repository triton_repo --grpc-port 8001 --http-port 8000

The wheel pins numpy<2, so the server lives in its own virtual environment (default
~/.cache/fsr-edge/triton-env, or --env / $FSR_TRITON_ENV) with `nvidia-pytriton` and the CPU `onnxruntime`
that the Python-backend models of `python -m export.triton --platform python` run on. The project's own
environment only needs the client (`pip install -e ".[triton]"`).

The bundled server has one backend, `python` (no onnxruntime, TensorRT or PyTorch backends). Its stub is
an embedded interpreter that ignores PYTHONPATH; it finds the environment's packages through the
`pyvenv.cfg` of the first `python3` on PATH, so the launcher puts the environment's `bin` first on PATH
and its Python's shared library on LD_LIBRARY_PATH. Stdlib only: no torch, no tritonclient.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .backends.triton_backend import ADMIN_KEY_HEADER, admin_key
from .errors import RuntimeToolkitError

log = logging.getLogger("runtime.triton_server")

PYTRITON_REQUIREMENT = "nvidia-pytriton==0.7.0"  # bundles tritonserver 2.51 with the Python backend
SERVER_PACKAGES = (PYTRITON_REQUIREMENT, "onnxruntime")
DEFAULT_ENV = Path.home() / ".cache" / "fsr-edge" / "triton-env"
SETUP_COMMAND = "python -m runtime.triton_server --setup"
READY_TIMEOUT_S = 120.0


class TritonServerError(RuntimeToolkitError):
    """The server environment is missing or broken, or the server did not start."""


def default_env() -> Path:
    return Path(os.environ.get("FSR_TRITON_ENV") or DEFAULT_ENV)


# --- the server's environment ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerEnv:
    """Paths inside a server environment (a venv with nvidia-pytriton installed)."""

    root: Path
    python_version: str  # "3.11"
    site_packages: Path
    python_libdir: Path  # holds libpython3.X.so of the environment's Python

    @property
    def pytriton_dist(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver"

    @property
    def server_binary(self) -> Path:
        return self.pytriton_dist / "bin" / "tritonserver"

    @property
    def server_libs(self) -> Path:
        return self.site_packages / "nvidia_pytriton.libs"

    @property
    def backend_dir(self) -> Path:
        """Backends as the server wants them: python/ with the stub of this environment's Python."""
        return self.root / "fsr-edge-backends"


def env_python(root: Path) -> Path:
    return root / "bin" / "python"


def open_env(root: Path) -> ServerEnv:
    """Describe an existing server environment; TritonServerError with the setup command if absent."""
    python = env_python(root)
    if not python.is_file():
        raise TritonServerError(f"no Triton server environment at {root}; create it with `{SETUP_COMMAND}"
                                f"{'' if root == default_env() else f' --env {root}'}` (a venv with "
                                f"{' and '.join(SERVER_PACKAGES)}, about 450 MB).")
    probe = ("import json, sys, sysconfig, importlib.util as u; spec = u.find_spec('pytriton'); "
             "print(json.dumps({'version': f'{sys.version_info[0]}.{sys.version_info[1]}', "
             "'site': str(sysconfig.get_paths()['purelib']), 'libdir': sysconfig.get_config_var('LIBDIR') or '', "
             "'pytriton': spec is not None, 'onnxruntime': u.find_spec('onnxruntime') is not None}))")
    proc = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TritonServerError(f"the Python of the Triton server environment {root} does not run "
                                f"({proc.stderr.strip().splitlines()[-1:]}); delete {root} and run `{SETUP_COMMAND}`.")
    found = json.loads(proc.stdout)
    missing = [name for name in ("pytriton", "onnxruntime") if not found[name]]
    if missing:
        raise TritonServerError(f"the Triton server environment {root} lacks {', '.join(missing)}; repair it with "
                                f"`{SETUP_COMMAND} --env {root}`.")
    env = ServerEnv(root, found["version"], Path(found["site"]), Path(found["libdir"]))
    if not env.server_binary.is_file():
        raise TritonServerError(f"{env.server_binary} is missing: the installed nvidia-pytriton has no bundled "
                                f"server; reinstall with `{SETUP_COMMAND} --env {root}`.")
    return env


def setup_env(root: Path, python: str = sys.executable) -> ServerEnv:
    """Create (or complete) the server environment: a venv of `python` with the server packages."""
    if not env_python(root).is_file():
        log.info("creating the Triton server environment %s", root)
        root.parent.mkdir(parents=True, exist_ok=True)
        _run_setup_step([python, "-m", "venv", str(root)], "creating the venv")
    log.info("installing %s into %s", " ".join(SERVER_PACKAGES), root)
    _run_setup_step([str(env_python(root)), "-m", "pip", "install", "--quiet", *SERVER_PACKAGES], "pip install")
    return open_env(root)


def _run_setup_step(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()
                 and not line.startswith("WARNING: Location")]
        raise TritonServerError(f"{what} failed ({' '.join(command)}): {lines[-1] if lines else proc.returncode}")


def prepare_backends(env: ServerEnv) -> Path:
    """The backend folder: the wheel's python backend plus the stub built for this environment's Python."""
    stub = env.pytriton_dist / "python_backend_stubs" / env.python_version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"nvidia-pytriton has no Python-backend stub for Python {env.python_version}; "
                                f"recreate {env.root} with a Python it supports (3.8 ... 3.13).")
    target = env.backend_dir / "python"
    sources = [f for f in (env.pytriton_dist / "backends" / "python").iterdir() if f.is_file()] + [stub]
    try:
        target.mkdir(parents=True, exist_ok=True)
        for source in sources:
            _install_file(source, target / source.name)
    except OSError as err:
        raise TritonServerError(f"cannot prepare the backend folder {target}: {err}") from err
    return env.backend_dir


def _install_file(source: Path, target: Path) -> None:
    """Copy unless already there; replace by rename, so a server running from the old file keeps it."""
    if target.is_file() and target.stat().st_size == source.stat().st_size \
            and target.stat().st_mtime >= source.stat().st_mtime:
        return
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def server_environment(env: ServerEnv) -> dict[str, str]:
    """Process environment: bundled libraries and the environment's libpython found first; its python3 first on
    PATH (the stub locates its packages through that interpreter's pyvenv.cfg)."""
    variables = dict(os.environ)
    libs = [str(env.server_libs), str(env.python_libdir)]
    if variables.get("LD_LIBRARY_PATH"):
        libs.append(variables["LD_LIBRARY_PATH"])
    variables["LD_LIBRARY_PATH"] = ":".join(libs)
    variables["PATH"] = f"{env.root / 'bin'}:{variables.get('PATH', '')}"
    variables.pop("PYTHONPATH", None)  # the project's paths mean nothing in the server's environment
    return variables


# APIs only requests with this user's admin key may use (runtime.backends.triton_backend.admin_key): with
# them a client could read, overwrite or unregister another process's shared memory, or load models.
RESTRICTED_APIS = "shared-memory,model-repository,trace,logging"
DEFAULT_HOST = "127.0.0.1"


def server_command(env: ServerEnv, repository: Path, grpc_port: int, http_port: int, metrics_port: int,
                   extra: list[str] = (), host: str = DEFAULT_HOST, key: str | None = None) -> list[str]:
    key = key or admin_key(create=True)
    restricted = f"{RESTRICTED_APIS}:{ADMIN_KEY_HEADER}={key}"
    return [str(env.server_binary), f"--model-repository={repository}", f"--backend-directory={env.backend_dir}",
            f"--grpc-address={host}", f"--http-address={host}", f"--metrics-address={host}",
            f"--grpc-port={grpc_port}", f"--http-port={http_port}", f"--metrics-port={metrics_port}",
            f"--grpc-restricted-protocol={restricted}", f"--http-restricted-api={restricted}",
            "--allow-metrics=false", "--strict-readiness=true", "--exit-on-error=true", *extra]


# --- a running server ----------------------------------------------------------------------------------
class TritonServer:
    """The bundled tritonserver as a child process; a context manager that waits for readiness and stops it."""

    def __init__(self, repository: str | Path, grpc_port: int = 8001, http_port: int = 8000,
                 metrics_port: int | None = None, env_root: str | Path | None = None,
                 log_file: str | Path | None = None, extra_args: list[str] = (), host: str = DEFAULT_HOST):
        self.repository = Path(repository).resolve()
        if not self.repository.is_dir():
            raise TritonServerError(f"--repository {repository} is not a folder; write one with "
                                    "`python -m export.triton --model M.json --repository DIR`.")
        self.grpc_port, self.http_port = grpc_port, http_port
        self.host = host  # the address it binds; clients here reach a wildcard bind through the loopback
        self.local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.metrics_port = metrics_port or http_port + 2
        self.env = open_env(Path(env_root) if env_root else default_env())
        self.log_file = Path(log_file) if log_file else self.repository.parent / f"{self.repository.name}.server.log"
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.local_host}:{self.grpc_port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "TritonServer":
        prepare_backends(self.env)
        command = server_command(self.env, self.repository, self.grpc_port, self.http_port, self.metrics_port,
                                 self.extra_args, host=self.host)
        shown = [part.split("=")[0] + "=<admin key>" if ADMIN_KEY_HEADER in part else part for part in command]
        log.info("starting %s (log: %s)", " ".join(shown), self.log_file)
        with open(self.log_file, "wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT,
                                            env=server_environment(self.env), preexec_fn=_stop_with_parent)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TritonServerError(f"tritonserver exited with code {self.process.returncode} before it was "
                                        f"ready: {self.log_tail()}")
            if self.is_ready():
                log.info("Triton ready: gRPC %s:%d, HTTP %s:%d", self.host, self.grpc_port, self.host, self.http_port)
                return
            time.sleep(0.25)
        self.stop()
        raise TritonServerError(f"tritonserver was not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.local_host}:{self.http_port}/v2/health/ready",
                                        timeout=2) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        useful = [line for line in text if line.startswith(("E", "error", "Error")) or "UNAVAILABLE" in line]
        return " | ".join((useful or text)[-lines:]) + f" (full log: {self.log_file})"

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited after `timeout_s`; returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("tritonserver did not stop within %.0f s of SIGTERM; killing it", timeout_s)
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _stop_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it when the launching process dies, so a killed launcher never
    leaves a server holding its ports."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --- CLI ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runtime.triton_server", description=__doc__.split("\n")[0])
    p.add_argument("--setup", action="store_true", help=f"create or repair the server environment "
                                                        f"({' + '.join(SERVER_PACKAGES)}) and exit unless "
                                                        "--repository is given")
    p.add_argument("--env", type=Path, help=f"server environment (default $FSR_TRITON_ENV or {DEFAULT_ENV})")
    p.add_argument("--repository", type=Path, help="model repository written by `python -m export.triton`")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address the server binds (default {DEFAULT_HOST}: this machine only; 0.0.0.0: every "
                        "interface). Shared memory and model loading need this user's admin key whatever the address")
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, help="default: HTTP port + 2")
    p.add_argument("--log-file", type=Path, help="server log (default: beside the repository)")
    p.add_argument("--ready-timeout", type=float, default=READY_TIMEOUT_S)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env_root = args.env or default_env()
    try:
        if args.setup:
            env = setup_env(env_root)
            print(f"Triton server environment ready: {env.root} (Python {env.python_version})", flush=True)
            if args.repository is None:
                return 0
        if args.repository is None:
            raise TritonServerError("--repository DIR is required to start the server (or use --setup alone).")
        return serve(args, env_root)
    except TritonServerError as err:
        log.error("%s", err)
        return 2


def serve(args, env_root: Path) -> int:
    """Start, report readiness on stdout, and stop cleanly on SIGTERM or SIGINT."""
    stop_requested = []

    def request_stop(signum, _frame):
        stop_requested.append(signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    server = TritonServer(args.repository, args.grpc_port, args.http_port, args.metrics_port, env_root,
                          args.log_file, host=args.host)
    try:
        server.start(args.ready_timeout)
        print(f"READY grpc={args.host}:{args.grpc_port} http={args.host}:{args.http_port}", flush=True)
        while not stop_requested and server.process.poll() is None:
            time.sleep(0.2)
        if not stop_requested:
            raise TritonServerError(f"tritonserver exited with code {server.process.returncode}: {server.log_tail()}")
    finally:
        code = server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("tritonserver stopped (exit code %s)", code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
