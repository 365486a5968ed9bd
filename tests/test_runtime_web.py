"""`--output http://HOST:PORT/` next to a video file, checked like a user would: the page in a real headless
Chromium (screenshot), /stream.mjpg read back by OpenCV, /events parsed; the file complete at the end."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import wait_until
from tests.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.shared


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _wait_for_frames(base: str, proc: subprocess.Popen, count: int, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            status = json.loads(_get(base + "status.json"))
            if status["frames"] >= count:
                return status
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"no {count} frames served within {timeout} s")


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, shared_dir) -> Path:
    """The street video three times over at 720p (315 frames): long enough to look at while it runs."""
    path = tmp_path_factory.mktemp("video") / "street3x.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (1280, 720))
    for _ in range(3):
        capture = cv2.VideoCapture(str(shared_dir / "data" / "scenes" / "street-video-1080p.mp4"))
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            writer.write(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_AREA))
        capture.release()
    writer.release()
    return path


@pytest.fixture
def live_run(tmp_path, long_video, detector_path, fast_sr_artifact):
    port = free_port()
    video, out = long_video, tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.enhance", "--source", str(video), "--model", str(fast_sr_artifact),
         "--output", f"http://127.0.0.1:{port}/", "--output", str(out), "--view", "gallery", "--detect-every", "2",
         "--max-frames", "400", "--headless", "--detector-model", str(detector_path)],
        cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield f"http://127.0.0.1:{port}/", proc, out
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_page_stream_events_and_file_from_one_run(live_run, tmp_path):
    base, proc, out = live_run
    _wait_for_frames(base, proc, 8)
    page = _get(base).decode()
    assert "/snapshot.jpg" in page and "gallery" in page
    snapshot = cv2.imdecode(np.frombuffer(_get(base + "snapshot.jpg"), np.uint8), cv2.IMREAD_COLOR)
    assert snapshot is not None and snapshot.shape[1] == 1280  # the gallery view of a 720p frame

    capture = cv2.VideoCapture(base + "stream.mjpg")
    frames = [capture.read()[1] for _ in range(3)]
    capture.release()
    assert all(f is not None and f.shape == snapshot.shape for f in frames)

    events = [json.loads(line) for line in _get(base + "events").decode().splitlines()]
    assert events and {"id", "frame", "track", "box", "enhanced", "route"} <= set(events[0])
    newer = [json.loads(line) for line in _get(base + f"events?since={events[-1]['id']}").decode().splitlines()]
    assert all(e["id"] > events[-1]["id"] for e in newer)

    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    assert proc.returncode == 143
    summary = json.loads(stdout)
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == summary["frames"] > 8  # the file is complete
    capture.release()


def _chromium(tmp_path: Path, url: str, *mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1100",
                           "--virtual-time-budget=3000", *mode, url],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_page_in_a_real_browser_shows_the_view_and_the_gallery(live_run, tmp_path):
    base, proc, _ = live_run
    _wait_for_frames(base, proc, 10)
    dom = _chromium(tmp_path, base, "--dump-dom").stdout  # the page after its scripts ran
    assert 'title="track' in dom  # gallery tiles rendered
    assert "FPS · frame" in dom  # the status line
    shot = tmp_path / "page.png"
    _chromium(tmp_path, base, f"--screenshot={shot}")
    image = cv2.imread(str(shot))
    assert image is not None, "Chromium wrote no screenshot"
    assert proc.poll() is None  # the run was still serving while the browser looked
    assert image[:8, :8].mean() < 40  # our dark page, not a browser error page
    status = image[:30]
    assert ((status[..., 1] > 150) & (status[..., 2] < 150)).sum() > 50  # green status text
    assert image[40:500].std() > 20  # a real frame in the view


def test_the_page_binds_this_machine_unless_told_otherwise():
    from runtime.outputs import parse_output

    assert parse_output("http://:8080/").host == "127.0.0.1"
    assert parse_output("http://@:8080/").host == "0.0.0.0"  # every interface: the operator's explicit choice
    assert parse_output("http://10.1.2.3:8080/").host == "10.1.2.3"


def test_slow_clients_are_capped_and_timed_out_and_the_run_goes_on(monkeypatch):
    """Clients that connect and never send a request (or never read) hold at most MAX_CLIENTS threads; a newcomer
    beyond them gets 503 at once; each is disconnected after CLIENT_TIMEOUT_S; the page then answers again."""
    import socket

    from runtime.outputs import web

    monkeypatch.setattr(web, "MAX_CLIENTS", 3)
    monkeypatch.setattr(web, "CLIENT_TIMEOUT_S", 1.5)
    sink = web.WebSink("127.0.0.1", 0)
    try:
        idle = [socket.create_connection(("127.0.0.1", sink.port), timeout=10) for _ in range(3)]
        wait_until(lambda: sink.server.connections >= 3, 10, "the server to take all three in")
        extra = socket.create_connection(("127.0.0.1", sink.port), timeout=10)
        assert extra.recv(100).startswith(b"HTTP/1.1 503")
        sink.write(np.zeros((48, 64, 3), np.uint8))  # the run is not held up
        start = time.monotonic()
        assert all(s.recv(100) == b"" for s in idle)  # the server hung up on each idle client
        assert time.monotonic() - start < 5
        page = urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/status.json", timeout=5).read()
        assert json.loads(page)["frames"] == 1
    finally:
        sink.close()


def test_a_client_that_stops_reading_the_stream_is_dropped(monkeypatch):
    """An MJPEG client that stops reading holds its connection only until a frame waits CLIENT_TIMEOUT_S to be
    taken; then its place (here the only one) is free again."""
    import socket

    from runtime.outputs import web

    monkeypatch.setattr(web, "MAX_CLIENTS", 1)
    monkeypatch.setattr(web, "CLIENT_TIMEOUT_S", 1.0)
    sink = web.WebSink("127.0.0.1", 0)
    status_url = f"http://127.0.0.1:{sink.port}/status.json"
    rng = np.random.default_rng(0)
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", sink.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: test\r\n\r\n")  # and never reads
        refused = served = 0
        deadline = time.monotonic() + 20
        while not served and time.monotonic() < deadline:
            sink.write(rng.integers(0, 256, (360, 640, 3), np.uint8))  # noise: large JPEGs fill the buffers
            time.sleep(0.1)
            try:
                served = json.loads(_get(status_url, timeout=2))["frames"]
            except OSError:  # 503 while the stalled client holds the only place
                refused += 1
        assert refused and served, (refused, served)
    finally:
        stalled.close()
        sink.close()


def test_closing_stops_the_server_thread_and_frees_the_port():
    import socket
    import threading

    from runtime.outputs import web

    sink = web.WebSink("127.0.0.1", free_port())
    sink.write(np.zeros((48, 64, 3), np.uint8))
    stream = urllib.request.urlopen(f"http://127.0.0.1:{sink.port}/stream.mjpg", timeout=5)  # a viewer stays
    assert stream.read(12) == b"--fsrframe\r\n"
    start = time.monotonic()
    sink.close()
    sink.close()  # twice is harmless
    assert time.monotonic() - start < 5
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("web:")]
    stream.close()
    with socket.create_server(("127.0.0.1", sink.port)):  # the port is free again
        pass
