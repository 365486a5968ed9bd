"""WebRTC viewers, as routes of the one web server (runtime.outputs.web):

    /NAME           the viewer page: a <video> that plays the stream (vanilla JS, no plugin)
    /NAME/offer     POST {"sdp": ..., "type": "offer"} (the page's offer, every ICE candidate in it) -> the answer

NAME is "webrtc" on `--output http://HOST:PORT/`; `--output webrtc://HOST:PORT/NAME` serves the page at / too.
Each viewer gets its own peer connection and encoder (aiortc: VP8 or H.264, whichever the browser prefers)
sending the newest view at 30 fps (repeated when the run is slower); the run only hands over its newest view, so a
slow or stalled viewer never slows the run. A viewer that goes away is dropped when its connection fails or
closes.

No STUN or TURN server is configured (LAN use; the default Google STUN server of aiortc is turned off): only
host candidates, so a browser must reach this machine's address directly — no NAT traversal. ICE offers every
non-loopback interface of the machine, whatever address the page is served on.

At most MAX_VIEWERS peer connections exist at once, counting offers still connecting (a newcomer beyond them gets
503), and an offer whose connection is not up within CONNECT_TIMEOUT_S is dropped with its sockets: offers that
never complete cannot exhaust the run's file descriptors. Needs aiortc (`pip install -e ".[live]"`); without it
`AVAILABLE` is False and these routes are not served.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

import numpy as np
from aiohttp import web

try:
    import av
    from aioice.ice import get_host_addresses
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
except ImportError:  # the [live] extra is missing
    av = None
    VideoStreamTrack = object

log = logging.getLogger(__name__)

AVAILABLE = av is not None
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


class ViewTrack(VideoStreamTrack):
    """A video track that sends the newest view at the track's pace (30 fps), stamped by `next_timestamp()`."""

    def __init__(self, latest: Callable[[], np.ndarray | None]):
        super().__init__()
        self.latest = latest

    async def recv(self):
        while self.latest() is None:  # nothing written yet
            await asyncio.sleep(0.05)
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self.latest()), format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ViewerLimit(Exception):
    """max_viewers peer connections exist already."""


class Viewers:
    """The viewer page at /NAME and its offers for one server. `latest()` gives the view to send, `within` is the
    server's deadline for reading a client (WebServer.within); the peer connections live on the server's loop."""

    def __init__(self, latest: Callable[[], np.ndarray | None], name: str, within: Callable[..., Awaitable]):
        self.latest, self.name, self.within = latest, name, within
        self.offer_path = f"/{name}/offer"
        self.peers: set = set()
        self.max_viewers, self.connect_timeout_s = MAX_VIEWERS, CONNECT_TIMEOUT_S
        self.closed = False
        self._page = PAGE.replace("__OFFER_URL__", self.offer_path)

    def add_routes(self, app: web.Application, at_root: bool = False) -> None:
        app.router.add_get(f"/{self.name}", self.page)
        if at_root:
            app.router.add_get("/", self.page)
        app.router.add_post(self.offer_path, self.offer)
        app.on_shutdown.append(self.close)

    def urls(self, host: str, port: int) -> list[str]:
        """The viewer page's addresses: for every interface ("0.0.0.0"), loopback and those ICE offers."""
        hosts = [host] if host not in ("0.0.0.0", "") else ["127.0.0.1", *get_host_addresses(True, False)]
        return [f"http://{address}:{port}/{self.name}" for address in hosts]

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=self._page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def offer(self, request: web.Request) -> web.Response:
        try:
            if not 0 < (request.content_length or 0) <= MAX_OFFER_BYTES:
                raise ValueError(f"expected a JSON body of 1 to {MAX_OFFER_BYTES} bytes")
            offer_sdp = _offer_sdp(await self.within(request, request.read()))
        except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
            return web.Response(status=400, text=str(err))
        try:
            answer = await asyncio.wait_for(self.answer(offer_sdp), ANSWER_TIMEOUT_S)
        except ViewerLimit as err:
            return web.Response(status=503, text=str(err))
        except asyncio.TimeoutError:
            return web.Response(status=504, text="no answer in time")
        except Exception as err:  # whatever aiortc raises for an offer it cannot use
            log.warning("WebRTC: cannot answer an offer from %s: %r", request.remote, err)
            return web.Response(status=400, text=f"cannot answer this offer: {err!r}")
        return web.json_response(answer)

    async def answer(self, offer_sdp: str) -> dict:
        """A viewer's offer -> the answer; its peer connection counts against max_viewers from now on."""
        if self.closed:
            raise ValueError("the output is closing")
        if len(self.peers) >= self.max_viewers:
            raise ViewerLimit(f"{len(self.peers)} viewers are connected or connecting (the limit); try again later")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # [] not None: None means Google's STUN
        self.peers.add(pc)
        asyncio.get_running_loop().call_later(self.connect_timeout_s, self._drop_if_not_connected, pc)

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
            asyncio.create_task(self._drop(pc))

    async def _drop(self, pc) -> None:
        self.peers.discard(pc)
        await pc.close()

    async def close(self, app: web.Application | None = None) -> None:
        """Close every peer connection (the server's shutdown)."""
        self.closed = True
        closing = asyncio.gather(*(self._drop(pc) for pc in list(self.peers)), return_exceptions=True)
        try:
            await asyncio.wait_for(closing, CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("WebRTC: the viewers' connections did not close within %.0f s", CLOSE_TIMEOUT_S)


def _offer_sdp(body: bytes) -> str:
    """The SDP of a POSTed offer; ValueError saying what was expected."""
    offer = json.loads(body)
    if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
        raise ValueError('expected {"sdp": "...", "type": "offer"}')
    return offer["sdp"]
