"""The live page of `--output http://HOST:PORT/`, as routes of the one web server (runtime.outputs.web):

    /               the page: live view, gallery of confirmed tracks (recorded | enhanced), event feed, FPS
    /stream.mjpg    the view as MJPEG (VLC, OpenCV, <img>, a video management system)
    /snapshot.jpg   the latest view
    /events         recent events as JSON lines (?since=ID for the newer ones only)
    /gallery.json   the tracks in the gallery; /track/ID.jpg their latest comparison crop
    /status.json    frames, faces, FPS

Views are JPEG-encoded once per frame, and only when somebody asks (on a worker thread, so the server's loop
keeps serving); memory is fixed (the latest view, the last EVENTS_KEPT events, GALLERY_TRACKS crops).
"""
from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict, deque
from typing import Awaitable, Callable

import cv2
import numpy as np
from aiohttp import web

from ..compose import comparison
from ..timing import FpsMeter

EVENTS_KEPT = 1000
GALLERY_TRACKS = 24
JPEG_QUALITY = 85
BOUNDARY = "fsrframe"
NO_STORE = {"Cache-Control": "no-store"}
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>fsr-edge live</title>
<style>
 body { background:#111; color:#ddd; font:14px sans-serif; margin:12px; }
 #view { max-width:100%; border:1px solid #333; }
 #status { margin:6px 0; color:#8f8; }
 #gallery img { height:96px; margin:2px; border:1px solid #333; }
 #events { font:12px monospace; height:160px; overflow:auto; background:#000; padding:4px; }
 h2 { font-size:15px; margin:10px 0 4px; }
</style></head><body>
<div id="status">waiting for frames…</div>
<img id="view" alt="live view">
<h2>Tracks (recorded | enhanced)</h2><div id="gallery"></div>
<h2>Events</h2><div id="events"></div>
<script>
let since = 0;
function refreshView() {  // snapshots, not MJPEG: the page finishes loading (screenshots, slow links)
  const next = new Image();
  next.onload = () => { document.getElementById('view').src = next.src; setTimeout(refreshView, 150); };
  next.onerror = () => setTimeout(refreshView, 1000);
  next.src = '/snapshot.jpg?t=' + Date.now();
}
async function poll() {
  try {
    const s = await (await fetch('/status.json')).json();
    document.getElementById('status').textContent =
      `${s.fps.toFixed(1)} FPS · frame ${s.frames} · ${s.faces} faces in view · ${s.tracks} tracks`;
    const g = await (await fetch('/gallery.json')).json();
    document.getElementById('gallery').innerHTML =
      g.map(t => `<img title="track ${t.track}" src="/track/${t.track}.jpg?v=${t.version}">`).join('');
    const lines = (await (await fetch('/events?since=' + since)).text()).trim().split('\\n').filter(Boolean);
    const box = document.getElementById('events');
    for (const line of lines) {
      const e = JSON.parse(line); since = e.id;
      const row = document.createElement('div');
      row.textContent = `#${e.frame} track ${e.track} ${e.enhanced ? 'enhanced' : 'kept'} (${e.route})`;
      box.prepend(row);
    }
    while (box.childNodes.length > 200) box.removeChild(box.lastChild);
  } catch (err) {}
  setTimeout(poll, 1000);
}
refreshView(); poll();
</script></body></html>
"""


class LiveState:
    """What the page shows: written by the run's thread, read by the server's loop (and its encoding threads)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.view: np.ndarray | None = None
        self.seq = 0
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self.events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self.next_event_id = 1
        self.gallery: OrderedDict[int, list] = OrderedDict()  # track -> [version, face, JPEG once asked for]
        self.frames = self.faces = 0
        self.fps = FpsMeter()

    def update(self, view: np.ndarray, result) -> None:
        with self.lock:
            self.fps.tick()
            self.view, self.seq, self.frames = view, self.seq + 1, self.frames + 1
            faces = result.faces if result is not None else []
            self.faces = len(faces)
            for face in faces:
                self._add_face(result.index, face)

    def _add_face(self, frame_index: int, face) -> None:
        self.events.append({"id": self.next_event_id, "frame": frame_index, "track": face.track_id,
                            "box": [round(float(v), 1) for v in face.box], "enhanced": face.sr is not None,
                            "route": face.route})
        self.next_event_id += 1
        if face.native is None:
            return
        version = self.gallery.pop(face.track_id, [0])[0] + 1
        self.gallery[face.track_id] = [version, face, None]  # encoded only when a browser asks for it
        while len(self.gallery) > GALLERY_TRACKS:
            self.gallery.popitem(last=False)

    def jpeg(self) -> tuple[int, bytes] | None:
        """The latest view as JPEG (encoded once per frame, on first request)."""
        with self.lock:
            if self.view is None:
                return None
            if self._jpeg[0] != self.seq:
                data = cv2.imencode(".jpg", self.view, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
                self._jpeg = (self.seq, data.tobytes())
            return self._jpeg

    def latest(self) -> np.ndarray | None:
        """The newest view (what WebRTC viewers are sent)."""
        with self.lock:
            return self.view

    def status(self) -> dict:
        with self.lock:
            return {"frames": self.frames, "faces": self.faces, "fps": round(self.fps.fps or 0.0, 2),
                    "tracks": len(self.gallery)}

    def events_since(self, since: int) -> list[dict]:
        with self.lock:
            return [e for e in self.events if e["id"] > since]

    def gallery_list(self) -> list[dict]:
        with self.lock:
            return [{"track": track, "version": entry[0]} for track, entry in reversed(self.gallery.items())]

    def track_jpeg(self, track: int) -> bytes | None:
        """The track's latest comparison crop as JPEG (encoded once per version, on first request)."""
        with self.lock:
            entry = self.gallery.get(track)
            if entry is None:
                return None
            if entry[2] is None:
                crop = comparison(entry[1], 128)
                entry[2] = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
            return entry[2]


class LivePage:
    """The page's routes over a LiveState. `within` is the server's deadline for writing to a client
    (WebServer.within); the MJPEG streams wait for `view_written()`, which the server's loop runs after each write."""

    def __init__(self, state: LiveState, within: Callable[..., Awaitable]):
        self.state = state
        self.within = within
        self.closed = False
        self._next_view = asyncio.Event()  # set (and replaced) at each written view

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.page)
        app.router.add_get("/index.html", self.page)
        app.router.add_get("/stream.mjpg", self.stream)
        app.router.add_get("/snapshot.jpg", self.snapshot)
        app.router.add_get("/events", self.events)
        app.router.add_get("/gallery.json", self.gallery)
        app.router.add_get("/status.json", self.status)
        app.router.add_get(r"/track/{track:\d+}.jpg", self.track)
        app.on_shutdown.append(self._stop_streams)

    def view_written(self) -> None:
        """On the server's loop: wake the streams."""
        self._next_view.set()
        self._next_view = asyncio.Event()

    async def _stop_streams(self, app: web.Application) -> None:
        self.closed = True
        self.view_written()

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers=NO_STORE)

    async def snapshot(self, request: web.Request) -> web.Response:
        latest = await asyncio.to_thread(self.state.jpeg)
        if latest is None:
            raise web.HTTPServiceUnavailable(text="no frame yet")
        return web.Response(body=latest[1], content_type="image/jpeg", headers=NO_STORE)

    async def events(self, request: web.Request) -> web.Response:
        try:
            since = int(request.query.get("since", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="bad number in the request") from None
        lines = "".join(json.dumps(event) + "\n" for event in self.state.events_since(since))
        return web.Response(text=lines, content_type="application/x-ndjson", headers=NO_STORE)

    async def gallery(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.gallery_list(), headers=NO_STORE)

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.status(), headers=NO_STORE)

    async def track(self, request: web.Request) -> web.Response:
        crop = await asyncio.to_thread(self.state.track_jpeg, int(request.match_info["track"]))
        if crop is None:
            raise web.HTTPNotFound(text="no such track")
        return web.Response(body=crop, content_type="image/jpeg", headers=NO_STORE)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """MJPEG: each new view as one part, until the client leaves or the server closes."""
        response = web.StreamResponse(
            headers={"Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}", **NO_STORE})
        await self.within(request, response.prepare(request))
        sent = -1
        while not self.closed:
            next_view = self._next_view  # taken before reading the view, so a write in between is not missed
            latest = await asyncio.to_thread(self.state.jpeg)
            if latest is not None and latest[0] != sent:
                sent, data = latest
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                await self.within(request, response.write(head.encode() + data + b"\r\n"))
            try:
                await asyncio.wait_for(next_view.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        return response
