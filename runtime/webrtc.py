"""`--output webrtc://@:PORT/NAME`: the enhanced stream in a browser over WebRTC, with low latency.

    /NAME (and /)   the viewer page: a <video> that plays the stream (vanilla JS, no plugin)
    /NAME/offer     POST {"sdp": ..., "type": "offer"} (the page's offer, every ICE candidate in it) -> the answer

Open http://HOST:PORT/NAME on the LAN (the URLs are logged at start). Each viewer gets its own peer connection
and encoder (aiortc: VP8 or H.264, whichever the browser prefers) sending the newest view at 30 fps (repeated
when the run is slower); `write()` only keeps the newest view, so a slow or stalled viewer never slows the run.
A viewer that goes away is dropped when its connection fails or closes.

No STUN or TURN server is configured (LAN use; the default Google STUN server of aiortc is turned off): only
host candidates, so a browser must reach this machine's address directly — no NAT traversal. "@" binds the
page to every interface, a HOST to that one; ICE itself offers every non-loopback interface of the machine.

Needs aiortc (`pip install -e ".[live]"`). The page is served by the standard library's HTTP server on a
daemon thread (like runtime.web, with its connection cap and timeouts); aiortc runs on its own asyncio loop on a
second daemon thread. At most MAX_VIEWERS peer connections exist at once, counting offers still connecting (a
newcomer beyond them gets 503), and an offer whose connection is not up within CONNECT_TIMEOUT_S is dropped with
its sockets: offers that never complete cannot exhaust the run's file descriptors.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler

import numpy as np

from .errors import SinkError
from .sinks import Sink
from .web import CLIENT_TIMEOUT_S, CappedHTTPServer, bind_description, send_body

try:
    import av
    from aioice.ice import get_host_addresses
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
except ImportError:  # the [live] extra is missing: WebRtcSink says so when opened
    av = None
    VideoStreamTrack = object

log = logging.getLogger(__name__)

ANSWER_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0
MAX_VIEWERS = 8  # peer connections at once, connecting ones included (each holds UDP sockets and an encoder)
CONNECT_TIMEOUT_S = 20.0  # an answered offer must be connected by then
MAX_OFFER_BYTES = 100_000
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fsr-edge live (WebRTC)</title>
<style>
 body { background:#111; color:#ddd; font:14px sans-serif; margin:12px; }
 #view { max-width:100%; border:1px solid #333; background:#000; }
 #state { margin:6px 0; color:#8f8; }
</style></head><body>
<div id="state">connecting…</div>
<video id="view" autoplay muted playsinline></video>
<script>
const OFFER_URL = "__OFFER_URL__";
function say(text) { document.getElementById('state').textContent = text; }
function gathered(pc) {  // the server takes one offer with the candidates (no trickle ICE)
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise(resolve => {
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 2000);  // some browsers take long to finish gathering: host candidates come first
  });
}
function retry(pc, why) {
  say(why + ' - retrying…');
  pc.close();
  setTimeout(connect, 2000);
}
async function connect() {
  const pc = new RTCPeerConnection();  // no STUN/TURN: the server must be reachable directly (LAN)
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.ontrack = event => {
    document.getElementById('view').srcObject = event.streams[0] || new MediaStream([event.track]);
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'failed' || pc.connectionState === 'closed') retry(pc, pc.connectionState);
    else say(pc.connectionState);
  };
  try {
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const response = await fetch(OFFER_URL, {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
    if (!response.ok) throw new Error(response.status + ' ' + await response.text());
    await pc.setRemoteDescription(await response.json());
  } catch (err) {
    retry(pc, 'cannot connect: ' + err.message);
  }
}
connect();
</script></body></html>
"""


class LatestView:
    """The newest view the run wrote; set by the run's thread, read by the senders."""

    def __init__(self):
        self._lock = threading.Lock()
        self._view: np.ndarray | None = None

    def set(self, view: np.ndarray) -> None:
        with self._lock:
            self._view = view

    def get(self) -> np.ndarray | None:
        with self._lock:
            return self._view


class ViewTrack(VideoStreamTrack):
    """A video track that sends the newest view at the track's pace (30 fps), stamped by `next_timestamp()`."""

    def __init__(self, latest: LatestView):
        super().__init__()
        self.latest = latest

    async def recv(self):
        while self.latest.get() is None:  # nothing written yet
            await asyncio.sleep(0.05)
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.latest.get()), format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def _handler(sink: "WebRtcSink") -> type[BaseHTTPRequestHandler]:
    page = PAGE.replace("__OFFER_URL__", sink.offer_path).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):  # the run's log, at debug level
            log.debug("webrtc http %s - %s", self.address_string(), fmt % args)

        def do_GET(self):
            if self.path.split("?", 1)[0] in ("/", f"/{sink.name}"):
                self._send(200, page, "text/html; charset=utf-8")
            else:
                self.send_error(404)

        def do_POST(self):
            if self.path != sink.offer_path:
                self.send_error(404)
                return
            try:
                offer_sdp = self._read_offer()
            except ValueError as err:  # JSONDecodeError included
                self._send(400, str(err).encode(), "text/plain; charset=utf-8")
                return
            try:
                answer = sink.answer(offer_sdp)
            except ViewerLimit as err:
                self._send(503, str(err).encode(), "text/plain; charset=utf-8")
                return
            except concurrent.futures.TimeoutError:
                self._send(504, b"no answer in time", "text/plain; charset=utf-8")
                return
            except Exception as err:  # whatever aiortc raises for an offer it cannot use
                log.warning("WebRTC: cannot answer an offer from %s: %r", self.address_string(), err)
                self._send(400, f"cannot answer this offer: {err!r}".encode(), "text/plain; charset=utf-8")
                return
            self._send(200, json.dumps(answer).encode(), "application/json")

        def _read_offer(self) -> str:
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_OFFER_BYTES:
                raise ValueError(f"expected a JSON body of 1 to {MAX_OFFER_BYTES} bytes")
            offer = json.loads(self.rfile.read(length))
            if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
                raise ValueError('expected {"sdp": "...", "type": "offer"}')
            return offer["sdp"]

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            try:
                send_body(self, body, content_type, code)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the viewer went away

    Handler.timeout = CLIENT_TIMEOUT_S
    return Handler


class ViewerLimit(Exception):
    """MAX_VIEWERS peer connections exist already."""


class WebRtcSink(Sink):
    """Serves the viewer page on `host:port` and streams the views written into it to every connected viewer."""

    def __init__(self, host: str, port: int, name: str = "stream"):
        if av is None:
            raise SinkError('--output webrtc://... needs aiortc: pip install -e ".[live]" (or pip install aiortc).')
        self.name, self.offer_path = name, f"/{name}/offer"
        self.latest = LatestView()
        self.peers: set = set()  # touched on the loop's thread only
        self.max_viewers, self.connect_timeout_s = MAX_VIEWERS, CONNECT_TIMEOUT_S
        self._closed = False
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name=f"webrtc-loop:{port}", daemon=True)
        self._loop_thread.start()
        try:
            self.server = CappedHTTPServer((host, port), _handler(self), MAX_VIEWERS + 4)
        except OSError as err:
            self._stop_loop()
            raise SinkError(f"--output webrtc://{host}:{port}/{name}: cannot listen ({err.strerror}); is the port "
                            "in use?") from err
        self.port = self.server.server_address[1]
        self._http_thread = threading.Thread(target=self.server.serve_forever, name=f"webrtc-http:{port}",
                                             daemon=True)
        self._http_thread.start()
        log.info("WebRTC: listening on %s; open %s in a browser (LAN only: no STUN/TURN)",
                 bind_description(host, self.port), " or ".join(self.urls(host)))

    def urls(self, host: str) -> list[str]:
        """The viewer page's addresses: for every interface ("0.0.0.0"), loopback and those ICE offers."""
        hosts = [host] if host not in ("0.0.0.0", "") else ["127.0.0.1", *get_host_addresses(True, False)]
        return [f"http://{address}:{self.port}/{self.name}" for address in hosts]

    @property
    def viewers(self) -> int:
        return len(self.peers)

    def write(self, view: np.ndarray, result=None) -> None:
        self.latest.set(view)

    def answer(self, offer_sdp: str) -> dict:
        """A viewer's offer -> the answer (called from an HTTP thread; the work runs on the loop)."""
        future = asyncio.run_coroutine_threadsafe(self._answer(offer_sdp), self.loop)
        return future.result(timeout=ANSWER_TIMEOUT_S)

    async def _answer(self, offer_sdp: str) -> dict:
        if self._closed:
            raise ValueError("the output is closing")
        if len(self.peers) >= self.max_viewers:
            raise ViewerLimit(f"{len(self.peers)} viewers are connected or connecting (the limit); try again later")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # [] not None: None means Google's STUN
        self.peers.add(pc)
        self.loop.call_later(self.connect_timeout_s, self._drop_if_not_connected, pc)

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                await self._drop(pc)
            log.info("WebRTC viewer %s (%d viewers)", pc.connectionState, len(self.peers))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            pc.addTrack(ViewTrack(self.latest))
            await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
        except Exception:  # an unusable offer, or no file descriptor left for its sockets (EMFILE)
            await self._drop(pc)
            raise
        return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}

    def _drop_if_not_connected(self, pc) -> None:
        if pc in self.peers and pc.connectionState != "connected":
            log.info("WebRTC: an offer did not connect within %.0f s; dropped", self.connect_timeout_s)
            self.loop.create_task(self._drop(pc))

    async def _drop(self, pc) -> None:
        self.peers.discard(pc)
        await pc.close()

    async def _close_peers(self) -> None:
        await asyncio.gather(*(self._drop(pc) for pc in list(self.peers)), return_exceptions=True)
        await self.loop.shutdown_default_executor()  # the encoders' threads

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=CLOSE_TIMEOUT_S)
        if not self._loop_thread.is_alive():
            self.loop.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.server.shutdown()
        self.server.server_close()
        try:
            asyncio.run_coroutine_threadsafe(self._close_peers(), self.loop).result(timeout=CLOSE_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("WebRTC: the viewers' connections did not close within %.0f s", CLOSE_TIMEOUT_S)
        self._stop_loop()
