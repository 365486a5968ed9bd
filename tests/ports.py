"""Ports for the tests that start servers (web, RTSP, WebRTC, Triton): a free one, and waiting until a server
has bound one (read from the kernel's socket tables, so that no probe connection uses up a one-client
listener such as FFmpeg's RTSP server mode)."""
from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import wait_until

TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_bound(port: int, protocol: str = "tcp") -> bool:
    """A socket of this process's network namespace listens on (tcp) or is bound to (udp) the port."""
    for table in (f"/proc/net/{protocol}", f"/proc/net/{protocol}6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and (protocol == "udp" or fields[3] == TCP_LISTEN):
                return True
    return False


def wait_until_bound(port: int, protocol: str = "tcp", timeout: float = 20.0) -> None:
    wait_until(lambda: is_bound(port, protocol), timeout, f"a server on {protocol} port {port}")
