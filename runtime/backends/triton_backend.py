"""Triton backend: `--model triton://HOST:PORT/NAME[/VERSION]` runs SR on a Triton Inference Server over gRPC.

The model's tensors (names, dtypes, dims) and its batch limit come from the server's model config, turned
into the runtime's `ModelArtifact` (`fetch_artifact`), so routing by input size and batch chunking work as
for local models. `tritonclient` is imported only when a triton:// model is used
(`pip install -e ".[triton]"`). A lost connection is retried with exponential backoff before it fails. When the
server is on this machine (127.0.0.1 / localhost), tensors travel through system shared memory regions
registered with the server instead of inside the gRPC messages.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifact import ModelArtifact
from ..contract import BatchProfile, TensorSpec
from ..errors import BackendError, ModelArtifactError
from ..stopping import STOP_REQUESTED, Cancelled, wait_unless_stopped
from ..uri import URIParts, port_number, split_uri
from .base import Backend

log = logging.getLogger(__name__)

SCHEME = "triton://"
DEFAULT_GRPC_PORT = 8001
NUMPY_DTYPES = {"TYPE_FP32": "float32", "TYPE_FP16": "float16", "TYPE_INT8": "int8", "TYPE_UINT8": "uint8",
                "TYPE_INT32": "int32", "TYPE_INT64": "int64"}
WIRE_DTYPES = {"float32": "FP32", "float16": "FP16", "int8": "INT8", "uint8": "UINT8", "int32": "INT32",
               "int64": "INT64"}
RETRY_DELAYS_S = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)  # ~6 s of backoff before a request fails
# A request's deadline: a CPU server answers a batch of 32 PFSR faces in about 2 s; a server that hangs (stopped,
# not dead) is given up on after this, and retried like an unreachable one.
REQUEST_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 0.5  # unregistering shared memory at the end of a run
SERVE_HINT = "start it with `python -m runtime.triton_server --repository DIR`"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_triton_url(text) -> bool:
    parts = split_uri(str(text))
    return parts is not None and parts.scheme == "triton"


@dataclass(frozen=True)
class TritonTarget:
    host: str
    port: int
    model: str
    version: str = ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.address}/{self.model}" + (f"/{self.version}" if self.version else "")

    @classmethod
    def parse(cls, url: str) -> "TritonTarget":
        """`triton://HOST[:PORT]/NAME[/VERSION]` (port default 8001, gRPC)."""
        parts = split_uri(str(url))
        target = cls._from_parts(parts) if parts is not None and parts.scheme == "triton" else None
        if target is None:
            raise ModelArtifactError(f"--model {url}: expected triton://HOST[:PORT]/NAME[/VERSION], e.g. "
                                     "triton://127.0.0.1:8001/pfsr_fp32")
        return target

    @classmethod
    def _from_parts(cls, parts: URIParts) -> "TritonTarget | None":
        model, *version = parts.segments or [""]
        version = "/".join(version)
        port = port_number(parts.port) if parts.port else DEFAULT_GRPC_PORT
        if not parts.host or not model or parts.query or port is None or (version and not version.isdigit()):
            return None
        return cls(parts.host, port, model, version)


@dataclass(frozen=True)
class RemoteArtifact(ModelArtifact):
    """A model served by Triton: the tensors and batch limit read from the server's model config."""

    target: TritonTarget | None = None
    served_model: str = ""  # the fsr-edge model name from the config's parameters, if the exporter wrote it

    @property
    def model_name(self) -> str:
        return self.served_model or self.target.model


def import_tritonclient():
    try:
        import tritonclient.grpc as grpcclient
    except ImportError as err:
        raise BackendError(f"triton:// models need the Triton client ({err}); install it with "
                           "`pip install -e \".[triton]\"` (tritonclient[grpc]).") from err
    return grpcclient


def fetch_artifact(url: str) -> RemoteArtifact:
    """Ask the server for the model's config and describe it as a runtime artifact."""
    target = TritonTarget.parse(url)
    client = _ready_client(target)
    try:
        config = client.get_model_config(target.model, target.version, as_json=True)["config"]
    finally:
        client.close()
    return artifact_from_config(config, target)


def artifact_from_config(config: dict, target: TritonTarget) -> RemoteArtifact:
    """Triton model config (JSON form) -> RemoteArtifact. A config without batching (max_batch_size 0) keeps
    its own first dim as the batch axis."""
    max_batch = int(config.get("max_batch_size", 0))
    inputs = tuple(_spec(t, target, batched=max_batch > 0) for t in config.get("input", []))
    outputs = tuple(_spec(t, target, batched=max_batch > 0) for t in config.get("output", []))
    if not inputs or not outputs:
        raise ModelArtifactError(f"{target.url}: the server's config lists no inputs or outputs.")
    if max_batch == 0:
        first = inputs[0].shape[0]
        max_batch = first if isinstance(first, int) else 1
    preferred = config.get("dynamic_batching", {}).get("preferred_batch_size") or [min(8, max_batch)]
    batch = BatchProfile(1, min(int(max(preferred)), max_batch), max_batch)
    params = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
    return RemoteArtifact(path=Path(target.model), inputs=inputs, outputs=outputs, batch=batch, target=target,
                          served_model=params.get("fsr_edge_model", ""))


def _spec(tensor: dict, target: TritonTarget, batched: bool) -> TensorSpec:
    dtype = NUMPY_DTYPES.get(tensor.get("data_type"))
    if dtype is None:
        raise ModelArtifactError(f"{target.url}: tensor {tensor.get('name')!r} has type {tensor.get('data_type')}; "
                                 f"expected one of {', '.join(NUMPY_DTYPES)}.")
    dims = tuple(int(d) if int(d) > 0 else "N" for d in tensor.get("dims", []))
    return TensorSpec(tensor["name"], dtype, (("N",) + dims) if batched else dims)


def _ready_client(target: TritonTarget):
    """A client whose server is live and whose model is ready; BackendError in one line otherwise."""
    grpcclient = import_tritonclient()
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(target.address)
    try:
        if not client.is_server_ready():
            raise BackendError(f"Triton server at {target.address} is not ready yet; retry when it is.")
        if not client.is_model_ready(target.model, target.version):
            raise BackendError(f"model {target.model!r} is not loaded on the Triton server at {target.address} "
                               f"({_served_models(client)}); write it with `python -m export.triton`.")
    except InferenceServerException as err:
        client.close()
        raise BackendError(f"Triton server at {target.address} is not reachable ({_one_line(err)}); "
                           f"{SERVE_HINT}.") from None
    except BackendError:
        client.close()
        raise
    return client


def _served_models(client) -> str:
    """'it has: a, b' where the repository index may be read (it needs the admin key: local servers)."""
    from tritonclient.utils import InferenceServerException

    key = admin_key()
    try:
        index = client.get_model_repository_index(headers={GRPC_ADMIN_KEY_HEADER: key} if key else None,
                                                  as_json=True)
    except InferenceServerException:
        return "its model list is restricted"
    return f"it has: {', '.join(m.get('name') for m in index.get('models', [])) or 'none'}"


def _one_line(err) -> str:
    return " ".join(str(err).split())[:200]


# The server started by `runtime.triton_server` restricts its shared-memory and model-repository APIs to
# requests that carry this header with the key in ADMIN_KEY_FILE (made once, readable by its owner only):
# another user on the machine, or anyone on the network, cannot list, unregister or register regions.
ADMIN_KEY_HEADER = "fsr-edge-admin-key"
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"  # the server's gRPC side adds this prefix
ADMIN_KEY_FILE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fsr-edge" / "triton-admin-key"


def admin_key(create: bool = False) -> str | None:
    """This user's key for the restricted APIs of local servers; made (0600) when `create` and missing."""
    if not ADMIN_KEY_FILE.is_file():
        if not create:
            return None
        import secrets

        ADMIN_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(ADMIN_KEY_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(24))
    return ADMIN_KEY_FILE.read_text().strip() or None


class SharedMemoryIO:
    """System shared memory regions for every input and output of one backend, sized for its max batch.
    Registered with this user's admin key (a local server restricts the shared-memory API to it)."""

    def __init__(self, backend: "TritonBackend"):
        import tritonclient.utils.shared_memory as shm

        key = admin_key()
        self.headers = {GRPC_ADMIN_KEY_HEADER: key} if key else None
        self.shm = shm
        prefix = f"fsr_{os.getpid()}_{id(self)}"
        self.regions = {}  # tensor name -> (region name, handle, byte size)
        self.registered = False
        for spec in (*backend.inputs, *backend.outputs):
            size = backend.max_batch * math.prod(spec.shape[1:]) * np.dtype(spec.dtype).itemsize
            name = f"{prefix}_{spec.name}"
            self.regions[spec.name] = (name, shm.create_shared_memory_region(name, f"/{name}", size), size)

    def register(self, client) -> None:
        self.registered = False
        for name, _, size in self.regions.values():
            client.unregister_system_shared_memory(name, headers=self.headers)  # after a restart: nothing to remove
            client.register_system_shared_memory(name, f"/{name}", size, headers=self.headers)
        self.registered = True

    def attach(self, inputs: list, outputs: list, feeds: dict[str, np.ndarray]) -> None:
        for tensor in inputs:
            name, handle, _ = self.regions[tensor.name()]
            array = np.ascontiguousarray(feeds[tensor.name()])
            self.shm.set_shared_memory_region(handle, [array])
            tensor.set_shared_memory(name, array.nbytes)
        for tensor in outputs:
            name, _, size = self.regions[tensor.name()]
            tensor.set_shared_memory(name, size)

    def read(self, result, spec: TensorSpec) -> np.ndarray:
        shape = list(result.get_output(spec.name).shape)
        return self.shm.get_contents_as_numpy(self.regions[spec.name][1], np.dtype(spec.dtype), shape).copy()

    def close(self, client) -> None:
        for name, handle, _ in self.regions.values():
            try:
                if client is not None:  # a short deadline: a hung server must not hold up the run's end
                    client.unregister_system_shared_memory(name, headers=self.headers,
                                                           client_timeout=CLOSE_TIMEOUT_S)
            except Exception as err:  # the server may be gone; the region is still freed here
                log.debug("triton: unregistering %s failed: %s", name, err)
            self.shm.destroy_shared_memory_region(handle)
        self.regions = {}


class TritonBackend(Backend):
    """Sends each batch to the server as one gRPC request; reconnects with backoff when the link drops.

    Args:
        artifact: a RemoteArtifact (`fetch_artifact`, or `load_model("triton://...")`).
        retry_delays_s: waits between attempts when the server is unreachable; () fails at once.
        timeout_s: per-request deadline (REQUEST_TIMEOUT_S; runtime.enhance --remote-timeout). A stop request
            (runtime.stopping) abandons a waiting request at once.
        shared_memory: pass tensors through system shared memory; None: when the server is on this machine.
    """

    name = "triton"

    def __init__(self, artifact: ModelArtifact, retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
                 timeout_s: float | None = REQUEST_TIMEOUT_S, shared_memory: bool | None = None):
        super().__init__(artifact)
        if not isinstance(artifact, RemoteArtifact):
            raise BackendError(f"--backend triton needs --model triton://HOST:PORT/NAME, not {artifact.path}.")
        self.target = artifact.target
        self.retry_delays_s = retry_delays_s
        self.timeout_s = timeout_s
        self.use_shared_memory = self.target.host in LOOPBACK_HOSTS if shared_memory is None else shared_memory
        self.client = None
        self.shared: SharedMemoryIO | None = None
        self.reconnects = 0

    def _activate(self) -> None:
        self.client = _ready_client(self.target)
        if self.use_shared_memory:
            self._open_shared_memory()

    def _open_shared_memory(self) -> None:
        """Fall back to plain gRPC (logged) when the regions cannot be made or registered."""
        try:
            self.shared = SharedMemoryIO(self)
            self.shared.register(self.client)
            log.info("triton: tensors go through system shared memory (%d regions)", len(self.shared.regions))
        except Exception as err:
            log.warning("triton: system shared memory unavailable (%s); sending tensors over gRPC", _one_line(err))
            if self.shared is not None:
                self.shared.close(self.client)
            self.shared = None

    def _deactivate(self) -> None:
        if self.shared is not None:
            self.shared.close(self.client)
            self.shared = None
        if self.client is not None:
            self.client.close()
        self.client = None

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from tritonclient.utils import InferenceServerException

        for attempt, delay in enumerate((*self.retry_delays_s, None)):
            try:
                return self._request(feeds)
            except InferenceServerException as err:
                if delay is None or not _is_connection_error(err):
                    raise BackendError(f"triton: {self.target.url} failed: {_one_line(err)}") from None
                log.warning("triton: %s unreachable (%s); retry %d in %.1f s", self.target.address,
                            _one_line(err), attempt + 1, delay)
                if STOP_REQUESTED.wait(delay):
                    raise Cancelled(f"triton: {self.target.url} unreachable; the run was asked to stop") from None
                self._reconnect()
        raise AssertionError("unreachable")

    def _request(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        grpcclient = import_tritonclient()
        inputs = [grpcclient.InferInput(name, list(array.shape), WIRE_DTYPES[str(array.dtype)])
                  for name, array in feeds.items()]
        wanted = [grpcclient.InferRequestedOutput(spec.name) for spec in self.outputs]
        if self.shared is not None:
            if not self.shared.registered:  # a reconnect found the server still down
                self.shared.register(self.client)
            self.shared.attach(inputs, wanted, feeds)
        else:
            for tensor in inputs:
                tensor.set_data_from_numpy(np.ascontiguousarray(feeds[tensor.name()]))
        result = self._infer_unless_stopped(inputs, wanted)
        if self.shared is not None:
            return {spec.name: self.shared.read(result, spec) for spec in self.outputs}
        return {spec.name: result.as_numpy(spec.name) for spec in self.outputs}

    def _infer_unless_stopped(self, inputs, wanted):
        """The request, waited for in short slices: a stop request (runtime.stopping) abandons it at once
        instead of after `timeout_s`, and a hung server times out like an unreachable one (and is retried)."""
        from tritonclient.utils import InferenceServerException

        done, answer = threading.Event(), {}

        def on_answer(result, error):
            answer.update(result=result, error=error)
            done.set()

        call = self.client.async_infer(self.target.model, inputs, on_answer, model_version=self.target.version,
                                       outputs=wanted, client_timeout=self.timeout_s)
        try:
            answered = wait_unless_stopped(done, None if self.timeout_s is None else self.timeout_s + 1.0,
                                           f"triton: request to {self.target.url}")
        except Cancelled:
            call.cancel()
            raise
        if not answered:
            call.cancel()
            raise InferenceServerException(f"no answer within {self.timeout_s:g} s",
                                           status="StatusCode.DEADLINE_EXCEEDED")
        if answer["error"] is not None:
            raise answer["error"]
        return answer["result"]

    def _reconnect(self) -> None:
        """A new connection; the regions are registered again (a restarted server has forgotten them)."""
        grpcclient = import_tritonclient()
        from tritonclient.utils import InferenceServerException

        if self.client is not None:
            self.client.close()
        self.client = grpcclient.InferenceServerClient(self.target.address)
        self.reconnects += 1
        if self.shared is not None:
            try:
                self.shared.register(self.client)
            except InferenceServerException as err:  # still down: the next attempt registers again
                log.debug("triton: registering shared memory failed: %s", _one_line(err))


def _is_connection_error(err) -> bool:
    status = str(err.status() or "")
    return "UNAVAILABLE" in status or "DEADLINE_EXCEEDED" in status or "unavailable" in str(err).lower()
