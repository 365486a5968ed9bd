"""`--output webrtc://HOST:PORT/NAME`: the URI is parsed (bad ones are errors with an example), the viewer page is
served, and peers that act like the page (aiortc in this process: a recvonly video transceiver, the offer POSTed
as JSON, the answer set) receive the written views, two at once.

VP8 is lossy: a received frame's mean colour must be within COLOUR_TOLERANCE per channel of a written colour
(solid 320x240 frames came back within 3 when this was written)."""
from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from tests.ports import free_port

from runtime.errors import SinkError
from runtime.outputs import parse_output
from tests.screens import screenshot

HAS_AIORTC = importlib.util.find_spec("aiortc") is not None
requires_aiortc = pytest.mark.skipif(not HAS_AIORTC, reason='aiortc is not installed (pip install -e ".[live]")')

WIDTH, HEIGHT = 320, 240
COLOURS = [(180, 90, 40), (40, 180, 90), (90, 40, 180)]  # BGR, a new one every 5 written frames (0.2 s)
COLOUR_TOLERANCE = 12
FRAMES_PER_VIEWER = 30  # about 1 s at the track's 30 fps


@pytest.mark.parametrize("text, host, port, name", [
    ("webrtc://@:8555/cam", "0.0.0.0", 8555, "cam"),
    ("webrtc://127.0.0.1:9000", "127.0.0.1", 9000, "stream"),
    ("webrtc://192.168.1.5:9000/", "192.168.1.5", 9000, "stream"),
    ("WEBRTC://:8555/front-door_1", "127.0.0.1", 8555, "front-door_1"),  # no host: this machine only
])
def test_webrtc_uri_is_parsed(text, host, port, name):
    uri = parse_output(text)
    assert (uri.scheme, uri.host, uri.port, uri.name) == ("webrtc", host, port, name)


@pytest.mark.parametrize("text", [
    "webrtc://@/cam", "webrtc://@:0/cam", "webrtc://@:70000/cam", "webrtc://@:port/cam", "webrtc://@:8555/a/b",
    "webrtc://@:8555/cam?x=1",
])
def test_webrtc_bad_uris_are_errors_with_an_example(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SinkError, match=r"expected webrtc://HOST:PORT/NAME .* e\.g\. webrtc://@:8555/enhanced"):
        parse_output(text)
    assert not any(tmp_path.iterdir())


def _post(url: str, body: bytes) -> dict:
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=15) as response:
        return json.loads(response.read())


@pytest.fixture
def webrtc_sink():
    from runtime.outputs.web import WebRtcSink

    sink = WebRtcSink("127.0.0.1", free_port(), "cam")
    yield sink
    sink.close()


@requires_aiortc
def test_webrtc_page_and_offer_errors(webrtc_sink):
    base = f"http://127.0.0.1:{webrtc_sink.port}"
    for path in ("/cam", "/"):
        page = urllib.request.urlopen(base + path, timeout=5).read().decode()
        assert '"/cam/offer"' in page and "<video" in page and "recvonly" in page
    with pytest.raises(urllib.error.HTTPError, match="404"):
        urllib.request.urlopen(base + "/other", timeout=5)
    for body in (b"not json", json.dumps({"sdp": "v=0", "type": "answer"}).encode(),
                 json.dumps({"sdp": "garbage", "type": "offer"}).encode()):
        with pytest.raises(urllib.error.HTTPError, match="400"):
            _post(base + "/cam/offer", body)
    assert webrtc_sink.viewers == 0  # a refused offer leaves no connection behind


@requires_aiortc
def test_webrtc_port_in_use_is_an_error():
    from runtime.outputs.web import WebRtcSink

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SinkError, match="cannot listen"):
            WebRtcSink("127.0.0.1", taken.getsockname()[1])


async def _view(offer_url: str) -> list[np.ndarray]:
    """What the viewer page does, with aiortc: offer a recvonly video transceiver, set the answer, play frames."""
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    track_arrived = asyncio.get_running_loop().create_future()
    pc.on("track", track_arrived.set_result)
    try:
        await pc.setLocalDescription(await pc.createOffer())  # aiortc puts every candidate in the offer
        body = json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}).encode()
        answer = await asyncio.to_thread(_post, offer_url, body)
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        track = await asyncio.wait_for(track_arrived, 5)
        frames = []
        for _ in range(FRAMES_PER_VIEWER):
            frame = await asyncio.wait_for(track.recv(), 10)
            frames.append(frame.to_ndarray(format="bgr24"))
        return frames
    finally:
        await pc.close()


async def _two_viewers(offer_url: str) -> list[list[np.ndarray]]:
    return await asyncio.gather(_view(offer_url), _view(offer_url))


def _nearest_colour(frame: np.ndarray) -> int:
    """The index of the written colour this frame shows (its mean within COLOUR_TOLERANCE), else -1."""
    mean = frame.reshape(-1, 3).mean(axis=0)
    for index, colour in enumerate(COLOURS):
        if np.abs(mean - colour).max() <= COLOUR_TOLERANCE:
            return index
    return -1


@requires_aiortc
def test_webrtc_streams_the_written_views_to_two_viewers(webrtc_sink):
    from aioice.ice import get_host_addresses

    if not get_host_addresses(True, True):
        pytest.skip("no network interface besides loopback: aioice offers no loopback ICE candidates")
    stop = threading.Event()

    def write_frames():
        index = 0
        while not stop.is_set():
            colour = COLOURS[(index // 5) % len(COLOURS)]
            webrtc_sink.write(np.full((HEIGHT, WIDTH, 3), colour, np.uint8))
            index += 1
            stop.wait(0.04)

    writer = threading.Thread(target=write_frames, daemon=True)
    writer.start()
    try:
        viewers = asyncio.run(asyncio.wait_for(_two_viewers(f"http://127.0.0.1:{webrtc_sink.port}/cam/offer"), 30))
    finally:
        stop.set()
        writer.join()
    for frames in viewers:
        assert len(frames) == FRAMES_PER_VIEWER
        assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in frames)
        shown = [_nearest_colour(frame) for frame in frames]
        means = [frame.reshape(-1, 3).mean(axis=0).round(1).tolist() for frame in frames]
        assert -1 not in shown, f"frames unlike any written colour: {means}"
        assert len(set(shown)) >= 2, "the stream did not follow the written views"
    deadline = time.monotonic() + 5
    while webrtc_sink.viewers and time.monotonic() < deadline:  # the viewers closed their connections
        time.sleep(0.1)
    assert webrtc_sink.viewers == 0


@requires_aiortc
def test_webrtc_close_stops_its_threads():
    from runtime.outputs.web import WebRtcSink

    sink = WebRtcSink("127.0.0.1", free_port(), "cam")
    sink.write(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    sink.close()
    sink.close()  # twice is harmless
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("web:")]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@requires_aiortc
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_a_real_browser_on_a_virtual_screen_plays_the_stream(virtual_screen, tmp_path):
    """Chromium (not headless: a window on Xvfb, as a person would open it) plays the stream; the screenshot
    shows the written frame: an orange field with a white rectangle."""
    from aioice.ice import get_host_addresses

    from runtime.outputs.web import WebRtcSink

    addresses = [a for a in get_host_addresses(use_ipv4=True, use_ipv6=False) if a != "127.0.0.1"]
    if not addresses:
        pytest.skip("no non-loopback interface: WebRTC host candidates need one")
    port = free_port()
    sink = WebRtcSink("0.0.0.0", port, "cam")
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:] = (0, 160, 255)  # BGR orange
    frame[100:260, 200:440] = 255
    browser = subprocess.Popen(
        [CHROMIUM, "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--autoplay-policy=no-user-gesture-required", "--disable-features=WebRtcHideLocalIpsWithMdns",
         "--window-position=0,0", "--window-size=1000,700", f"http://{addresses[0]}:{port}/cam"],
        env={**os.environ, "DISPLAY": virtual_screen}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, shot = time.monotonic() + 40, None
        while time.monotonic() < deadline:
            sink.write(frame)
            time.sleep(0.05)
            if sink.viewers:
                shot = screenshot(virtual_screen)
                if _orange(shot).sum() > 0.8 * (640 * 360 - 240 * 160):
                    break
    finally:
        browser.terminate()
        browser.wait(10)
        sink.close()
    assert shot is not None, "the browser never connected"
    ys, xs = np.nonzero(_orange(shot))
    top, left, bottom, right = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
    assert abs((right - left) - 640) <= 4 and abs((bottom - top) - 360) <= 4  # the whole frame, at 1:1
    inside = shot[top:bottom, left:right]
    white = np.all(inside > 230, axis=-1).mean()
    assert abs(white - (240 * 160) / (640 * 360)) < 0.02  # the white rectangle in its middle


def _orange(image: np.ndarray) -> np.ndarray:
    return np.all(np.abs(image.astype(int) - (0, 160, 255)) < 40, axis=-1)


async def _offer_sdp() -> str:
    """A real viewer's offer (aiortc, every candidate in it); the peer is closed, so it never connects."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@requires_aiortc
def test_offers_that_never_connect_are_capped_and_dropped(webrtc_sink):
    """Offers that never complete (a remote denial of service) hold at most max_viewers connections, get 503
    beyond that, and are dropped with their sockets after the connect timeout; the output keeps working."""
    webrtc_sink.webrtc.max_viewers, webrtc_sink.webrtc.connect_timeout_s = 3, 2.0
    offer_url = f"http://127.0.0.1:{webrtc_sink.port}/cam/offer"
    body = json.dumps({"sdp": asyncio.run(_offer_sdp()), "type": "offer"}).encode()
    for _ in range(3):
        assert _post(offer_url, body)["type"] == "answer"
    with pytest.raises(urllib.error.HTTPError, match="503"):
        _post(offer_url, body)
    assert webrtc_sink.viewers == 3
    deadline = time.monotonic() + 10
    while webrtc_sink.viewers and time.monotonic() < deadline:
        webrtc_sink.write(np.zeros((48, 64, 3), np.uint8))
        time.sleep(0.2)
    assert webrtc_sink.viewers == 0
    assert _post(offer_url, body)["type"] == "answer"  # room again for a real viewer


@requires_aiortc
def test_one_server_serves_the_page_the_mjpeg_stream_and_webrtc_offers_on_one_port():
    """`--output http://...`: the live page, /stream.mjpg and the WebRTC viewer with its offer endpoint all come
    from the one server thread, on the one port."""
    from runtime.outputs import open_output

    sink = open_output(parse_output(f"http://127.0.0.1:{free_port()}/"), headless=True, fps=None)
    try:
        sink.write(np.zeros((HEIGHT, WIDTH, 3), np.uint8))
        base = f"http://127.0.0.1:{sink.port}"
        assert "/snapshot.jpg" in urllib.request.urlopen(base + "/", timeout=5).read().decode()
        with urllib.request.urlopen(base + "/stream.mjpg", timeout=5) as stream:
            assert stream.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=fsrframe"
            assert stream.read(12) == b"--fsrframe\r\n"
        viewer = urllib.request.urlopen(base + "/webrtc", timeout=5).read().decode()
        assert '"/webrtc/offer"' in viewer and "<video" in viewer
        offer = json.dumps({"sdp": asyncio.run(_offer_sdp()), "type": "offer"}).encode()
        assert _post(base + "/webrtc/offer", offer)["type"] == "answer"
        assert sink.viewers == 1
        assert [thread.name for thread in threading.enumerate() if thread.name.startswith("web:")] == \
            [f"web:{sink.port}"]
    finally:
        sink.close()
    assert sink.viewers == 0
