"""Network sources that misbehave, served from 127.0.0.1 inside the test: a server that accepts and never
answers, and an MJPEG stream that stalls after a few frames (the read watchdog must replace the capture)."""
from __future__ import annotations

import socket
import threading
import time

import cv2
import numpy as np
import pytest

from runtime.enhance import main

pytestmark = pytest.mark.shared


class _Server:
    """A TCP server on 127.0.0.1 running `handle(connection)` for each client on its own thread."""

    def __init__(self, handle):
        self.handle = handle
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection) -> None:
        try:
            self.handle(connection, self.stopped)
        except OSError:
            pass
        finally:
            connection.close()

    def close(self) -> None:
        self.stopped.set()
        self.sock.close()


def _never_answer(connection, stopped) -> None:
    stopped.wait(60)


def _mjpeg_then_stall(frames_per_connection: int):
    image = np.full((120, 160, 3), 90, np.uint8)
    cv2.circle(image, (80, 60), 30, (200, 180, 160), -1)
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()

    def handle(connection, stopped) -> None:
        connection.recv(4096)  # the request
        connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n")
        for _ in range(frames_per_connection):
            connection.sendall(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                               + str(len(jpeg)).encode() + b"\r\n\r\n" + jpeg + b"\r\n")
            time.sleep(0.05)
        stopped.wait(60)  # stall: the connection stays open, nothing more comes

    return handle


@pytest.fixture
def server_factory():
    servers = []

    def make(handle) -> _Server:
        servers.append(_Server(handle))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.mark.parametrize("scheme", ["http", "rtsp"])
def test_a_server_that_never_answers_is_one_clear_error(tmp_path, caplog, detector_path, fast_sr_artifact,
                                                         server_factory, scheme):
    server = server_factory(_never_answer)
    start = time.monotonic()
    code = main(["--source", f"{scheme}://127.0.0.1:{server.port}/stream", "--model", str(fast_sr_artifact),
                 "--output", str(tmp_path / "out.mp4"), "--headless", "--detector-model", str(detector_path)])
    assert code == 2
    assert "cannot open source" in caplog.text
    assert time.monotonic() - start < 30  # the open gives up; it does not hang
    assert server.connections >= 1
    assert not (tmp_path / "out.mp4").exists()  # nothing half-written


def test_a_stream_that_stalls_is_reopened_by_the_watchdog(tmp_path, detector_path, fast_sr_artifact,
                                                          server_factory):
    server = server_factory(_mjpeg_then_stall(frames_per_connection=4))
    summary = tmp_path / "summary.json"
    code = main(["--source", f"http://127.0.0.1:{server.port}/stream.mjpg", "--model", str(fast_sr_artifact),
                 "--output", str(tmp_path / "out.mp4"), "--max-frames", "6", "--headless", "--summary", str(summary),
                 "--detector-model", str(detector_path)])
    assert code == 0
    import json

    result = json.loads(summary.read_text())
    assert result["frames"] == 6  # frames from a second connection: the stalled capture was replaced
    assert server.connections >= 2 and result["reconnects"] >= 1
    capture = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    capture.release()
