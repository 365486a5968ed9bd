"""A process-wide stop request, so that a call that blocks (a remote model's request to a server that hangs)
can give up at once instead of running out its timeout. `runtime.pipeline.StopSignals` sets it."""
from __future__ import annotations

import threading

from .errors import BackendError

STOP_REQUESTED = threading.Event()
POLL_S = 0.1  # how often a waiting call looks at the request


class Cancelled(BackendError):
    """A model call abandoned because the run was asked to stop."""


def wait_unless_stopped(done: threading.Event, timeout_s: float | None, what: str) -> bool:
    """Wait for `done` up to `timeout_s` (None: no limit); True if it happened, False on timeout.
    Raises Cancelled as soon as a stop was requested."""
    waited = 0.0
    while not done.wait(POLL_S):
        if STOP_REQUESTED.is_set():
            raise Cancelled(f"{what}: abandoned, the run was asked to stop")
        waited += POLL_S
        if timeout_s is not None and waited >= timeout_s:
            return False
    return True
