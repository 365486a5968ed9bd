"""`--output http://@:PORT/`: the enhanced stream in a browser, from a small server inside the run.

    /               the page: live view, gallery of confirmed tracks (recorded | enhanced), event feed, FPS
    /stream.mjpg    the view as MJPEG (VLC, OpenCV, <img>, a video management system)
    /snapshot.jpg   the latest view
    /events         recent events as JSON lines (?since=ID for the newer ones only)
    /gallery.json   the tracks in the gallery; /track/ID.jpg their latest comparison crop
    /status.json    frames, faces, FPS

Standard library only (http.server on a daemon thread). Views are JPEG-encoded once per frame, and only when
somebody asks; memory is fixed (the latest view, the last EVENTS_KEPT events, GALLERY_TRACKS crops). At most
MAX_CLIENTS connections are served at once (a newcomer beyond them gets 503 at once), and a client that neither
sends its request nor reads what it is sent for CLIENT_TIMEOUT_S is disconnected: slow or hostile clients
cannot take the run's threads or file descriptors. `http://:PORT/` binds 127.0.0.1, `http://@:PORT/` every
interface, `http://HOST:PORT/` that address.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import cv2
import numpy as np

from .compose import comparison
from .errors import SinkError
from .sinks import Sink
from .timing import FpsMeter

log = logging.getLogger(__name__)

EVENTS_KEPT = 1000
MAX_CLIENTS = 32  # connections served at once (each MJPEG viewer holds one)
CLIENT_TIMEOUT_S = 10.0  # a socket read or write that waits longer ends that connection
GALLERY_TRACKS = 24
JPEG_QUALITY = 85
BOUNDARY = "fsrframe"
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
    """What the server shows, updated by the run and read by request threads."""

    def __init__(self):
        self.lock = threading.Condition()
        self.view: np.ndarray | None = None
        self.seq = 0
        self._jpeg: tuple[int, bytes] = (-1, b"")
        self.events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self.next_event_id = 1
        self.gallery: OrderedDict[int, list] = OrderedDict()  # track -> [version, face, JPEG once asked for]
        self.frames = self.faces = 0
        self.fps = FpsMeter()
        self.closed = False

    def update(self, view: np.ndarray, result) -> None:
        with self.lock:
            self.fps.tick()
            self.view, self.seq, self.frames = view, self.seq + 1, self.frames + 1
            faces = result.faces if result is not None else []
            self.faces = len(faces)
            for face in faces:
                self._add_face(result.index, face)
            self.lock.notify_all()

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
                ok, data = cv2.imencode(".jpg", self.view, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                self._jpeg = (self.seq, data.tobytes())
            return self._jpeg

    def wait_newer(self, seq: int, timeout: float) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.seq > seq or self.closed, timeout) and not self.closed

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


def send_body(handler: BaseHTTPRequestHandler, body: bytes, content_type: str, code: int = 200) -> None:
    """A complete, uncached response (also runtime.webrtc's)."""
    handler.send_response(code)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Cache-Control", "no-store")
    handler.end_headers()
    handler.wfile.write(body)


class CappedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on the connections served at once (the others get 503 at once) and a
    socket timeout for each (set on the handler class). Also used by runtime.webrtc."""

    daemon_threads = True

    def __init__(self, address, handler, max_clients: int = MAX_CLIENTS):
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_clients)
        self.refused = 0

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            _refuse(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread could be started: give the slot back
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def _refuse(request) -> None:
    try:
        request.settimeout(1.0)
        request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n"
                        b"Connection: close\r\n\r\ntoo many clients\n")
    except OSError:
        pass


def bind_description(host: str, port: int) -> str:
    """What a server really listens on, for the log."""
    if host in ("0.0.0.0", "::"):
        return f"every interface, port {port} (http://127.0.0.1:{port}/ on this machine)"
    return f"{host}:{port} only"


def _handler(state: LiveState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = CLIENT_TIMEOUT_S  # applied to the socket in setup(): idle or non-reading clients end

        def log_message(self, fmt, *args):  # the run's log, at debug level
            log.debug("http %s - %s", self.address_string(), fmt % args)

        def do_GET(self):
            url = urlparse(self.path)
            route = url.path
            try:
                if route in ("/", "/index.html"):
                    self._send(PAGE.encode(), "text/html; charset=utf-8")
                elif route == "/snapshot.jpg":
                    latest = state.jpeg()
                    self._send(latest[1], "image/jpeg") if latest else self.send_error(503, "no frame yet")
                elif route == "/stream.mjpg":
                    self._stream()
                elif route == "/events":
                    since = int(parse_qs(url.query).get("since", ["0"])[0])
                    lines = "".join(json.dumps(e) + "\n" for e in state.events_since(since))
                    self._send(lines.encode(), "application/x-ndjson")
                elif route == "/gallery.json":
                    self._send(json.dumps(state.gallery_list()).encode(), "application/json")
                elif route == "/status.json":
                    self._send(json.dumps(state.status()).encode(), "application/json")
                elif route.startswith("/track/") and route.endswith(".jpg"):
                    crop = state.track_jpeg(int(route[len("/track/"):-len(".jpg")]))
                    self._send(crop, "image/jpeg") if crop else self.send_error(404, "no such track")
                else:
                    self.send_error(404)
            except ValueError:
                self.send_error(400, "bad number in the request")
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the client went away, or stopped reading

        def _send(self, body: bytes, content_type: str) -> None:
            send_body(self, body, content_type)

        def _stream(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            seq = -1
            while not state.closed:
                latest = state.jpeg()
                if latest is not None and latest[0] != seq:
                    seq, data = latest
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                                     .encode() + data + b"\r\n")
                state.wait_newer(seq, timeout=1.0)

    return Handler


class WebSink(Sink):
    """Serves the page and streams on `host:port` while the run writes frames into it."""

    def __init__(self, host: str, port: int):
        self.state = LiveState()
        try:
            self.server = CappedHTTPServer((host, port), _handler(self.state), MAX_CLIENTS)
        except OSError as err:
            raise SinkError(f"--output http://{host}:{port}/: cannot listen ({err.strerror}); is the port in use?") \
                from err
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name=f"http:{port}", daemon=True)
        self._thread.start()
        log.info("serving the live view on %s (MJPEG: /stream.mjpg)", bind_description(host, self.port))

    def write(self, view: np.ndarray, result=None) -> None:
        self.state.update(view, result)

    def close(self) -> None:
        with self.state.lock:
            self.state.closed = True
            self.state.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()
