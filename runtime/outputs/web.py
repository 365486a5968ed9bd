"""The one web server of a run: `--output http://HOST:PORT/` and `--output webrtc://HOST:PORT/NAME`.

    http://HOST:PORT/        the live page, MJPEG, snapshots, events, gallery (runtime.outputs.live) and, with
                             aiortc, the WebRTC viewer at /webrtc with its offers at /webrtc/offer
                             (runtime.outputs.webrtc): one server, one port
    webrtc://HOST:PORT/NAME  only the WebRTC viewer, at / and /NAME, offers at /NAME/offer

An aiohttp application served by its own asyncio event loop on a daemon thread ("web:PORT"); the run's thread
only hands it views. Slow or hostile clients cannot take the run's memory or file descriptors:
- at most MAX_CLIENTS connections are served at once; a newcomer beyond them gets 503 at once (the server
  accepts connections itself to count them: aiohttp has no such cap);
- a connection that sends no complete request within CLIENT_TIMEOUT_S, idles that long between requests, or
  does not send a request body or take a response (an MJPEG frame included) within it is dropped;
- WebRTC: at most MAX_VIEWERS peer connections, offers that do not connect dropped (runtime.outputs.webrtc).
`http://:PORT/` binds 127.0.0.1, `http://@:PORT/` every interface, `http://HOST:PORT/` that address.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import weakref
from typing import Awaitable

import numpy as np
from aiohttp import web

from ..errors import SinkError
from .base import Sink
from .live import LivePage, LiveState
from .webrtc import AVAILABLE as WEBRTC_AVAILABLE
from .webrtc import MAX_OFFER_BYTES, Viewers

log = logging.getLogger(__name__)

MAX_CLIENTS = 32  # connections served at once (each MJPEG viewer holds one)
CLIENT_TIMEOUT_S = 10.0  # a request, body or response write that waits longer ends that connection
CLOSE_TIMEOUT_S = 5.0  # requests still running when the output closes get this long
STOP_TIMEOUT_S = 15.0  # the whole stop: requests, WebRTC peers, worker threads
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 17\r\n"
        b"Connection: close\r\n\r\ntoo many clients\n")


def bind_description(host: str, port: int) -> str:
    """What a server really listens on, for the log."""
    if host in ("0.0.0.0", "::"):
        return f"every interface, port {port} (http://127.0.0.1:{port}/ on this machine)"
    return f"{host}:{port} only"


class WebServer:
    """`app` served on host:port by a daemon thread's event loop, from `start()` to `close()`.

    `label` (the --output text) names the output in errors and the log. `max_clients` and `timeout_s` are read
    from the module's constants when made."""

    def __init__(self, label: str):
        self.label = label
        self.max_clients, self.timeout_s = MAX_CLIENTS, CLIENT_TIMEOUT_S
        self.app = web.Application(middlewares=[self._deadline_middleware()], client_max_size=MAX_OFFER_BYTES)
        self.port = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._requested = weakref.WeakSet()  # transports that have sent a complete request
        self._closed = False

    def start(self, host: str, port: int) -> None:
        """Listen (SinkError if the address cannot be bound) and serve on a new thread."""
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=f"web:{port}", daemon=True)
        self._thread.start()
        try:
            self.port = self._call(self._start(host, port), CLOSE_TIMEOUT_S)
        except OSError as err:
            self._closed = True
            self._stop_loop()
            raise SinkError(f"--output {self.label}: cannot listen ({err.strerror}); is the port in use?") from err
        self._thread.name = f"web:{self.port}"

    def call_soon(self, callback) -> None:
        """Run `callback()` on the server's loop (from any thread)."""
        if not self._closed:
            self.loop.call_soon_threadsafe(callback)

    def _call(self, coroutine, timeout: float):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _start(self, host: str, port: int) -> int:
        self._listener = socket.create_server((host, port))  # SO_REUSEADDR: a restarted run gets its port back
        self._listener.setblocking(False)
        self._runner = web.AppRunner(self.app, access_log=None, keepalive_timeout=self.timeout_s,
                                     shutdown_timeout=CLOSE_TIMEOUT_S)
        await self._runner.setup()
        self._accepting = asyncio.create_task(self._accept())
        return self._listener.getsockname()[1]

    async def _accept(self) -> None:
        """Hand each connection to aiohttp, or refuse it with 503 when max_clients are being served."""
        server = self._runner.server
        while True:
            try:
                client, _ = await self.loop.sock_accept(self._listener)
            except OSError as err:  # e.g. no file descriptor left (EMFILE): try again shortly
                log.warning("--output %s: cannot accept a connection: %s", self.label, err)
                await asyncio.sleep(0.5)
                continue
            if len(server.connections) >= self.max_clients:
                _refuse(client)
                continue
            try:
                transport, _ = await self.loop.connect_accepted_socket(server, client)
            except OSError:
                client.close()
                continue
            self.loop.call_later(self.timeout_s, self._drop_if_silent, transport)

    @property
    def connections(self) -> int:
        """Connections being served now."""
        return len(self._runner.server.connections)

    def _drop_if_silent(self, transport: asyncio.Transport) -> None:
        if transport not in self._requested:
            transport.abort()

    def _deadline_middleware(self):
        @web.middleware
        async def deadline(request: web.Request, handler) -> web.StreamResponse:
            if request.transport is not None:
                self._requested.add(request.transport)
            try:
                response = await handler(request)
                if not response.prepared:  # written here, so that a client that does not read is dropped
                    await self.within(request, _send(request, response))
            except ConnectionError:  # the client went away or was dropped: nothing more can reach it
                raise web.HTTPRequestTimeout() from None
            return response

        return deadline

    async def within(self, request: web.Request, awaitable: Awaitable):
        """Await a read from or a write to the client; one that takes longer than timeout_s is dropped
        (ConnectionResetError)."""
        try:
            return await asyncio.wait_for(awaitable, self.timeout_s)
        except asyncio.TimeoutError:
            if request.transport is not None:
                request.transport.abort()  # close() would wait for the unsent data first
            raise ConnectionResetError(f"no progress for {self.timeout_s:g} s") from None

    def close(self) -> None:
        """Stop serving: close the connections and the listening socket, stop the thread. Twice is harmless."""
        if self._closed or self.loop is None:
            return
        self._closed = True
        try:
            self._call(self._stop(), STOP_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            log.warning("--output %s: the server did not stop within %.0f s", self.label, STOP_TIMEOUT_S)
        self._stop_loop()

    async def _stop(self) -> None:
        self._accepting.cancel()
        await asyncio.gather(self._accepting, return_exceptions=True)
        self._listener.close()
        await self._runner.cleanup()  # the app's on_shutdown (streams end, peers close), then the connections
        # what is left (aiortc's connection attempts of closed peers) is cancelled, as asyncio.run does at its end
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in left:
            task.cancel()
        await asyncio.gather(*left, return_exceptions=True)
        await self.loop.shutdown_default_executor()  # JPEG and video encoding threads

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


async def _send(request: web.Request, response: web.StreamResponse) -> None:
    await response.prepare(request)
    await response.write_eof()


def _refuse(client: socket.socket) -> None:
    try:
        client.send(BUSY)  # a few bytes into an empty socket buffer: never blocks
        client.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    client.close()


class WebSink(Sink):
    """`http://HOST:PORT/`: serves the live page, its streams and (with aiortc) WebRTC at /webrtc, on one port,
    while the run writes frames into it."""

    def __init__(self, host: str, port: int):
        self._serve(host, port, f"http://{host}:{port}/", live_page=True, webrtc_name="webrtc")
        log.info("serving the live view on %s (MJPEG: /stream.mjpg; WebRTC: %s)", bind_description(host, self.port),
                 "/webrtc" if self.webrtc else 'no - pip install -e ".[live]"')

    def _serve(self, host: str, port: int, label: str, live_page: bool, webrtc_name: str) -> None:
        self.state = LiveState()
        self.server = WebServer(label)
        self.live = LivePage(self.state, self.server.within) if live_page else None
        self.webrtc = Viewers(self.state.latest, webrtc_name, self.server.within) if WEBRTC_AVAILABLE else None
        if self.live is not None:
            self.live.add_routes(self.server.app)
        if self.webrtc is not None:
            self.webrtc.add_routes(self.server.app, at_root=not live_page)
        self.server.start(host, port)
        self.port = self.server.port

    @property
    def viewers(self) -> int:
        """WebRTC peer connections, connecting ones included."""
        return len(self.webrtc.peers) if self.webrtc is not None else 0

    def write(self, view: np.ndarray, result=None) -> None:
        self.state.update(view, result)
        if self.live is not None:
            self.server.call_soon(self.live.view_written)

    def close(self) -> None:
        self.server.close()


class WebRtcSink(WebSink):
    """`webrtc://HOST:PORT/NAME`: the same server with only the WebRTC viewer, at / and /NAME."""

    def __init__(self, host: str, port: int, name: str = "stream"):
        if not WEBRTC_AVAILABLE:
            raise SinkError('--output webrtc://... needs aiortc: pip install -e ".[live]" (or pip install aiortc).')
        self._serve(host, port, f"webrtc://{host}:{port}/{name}", live_page=False, webrtc_name=name)
        log.info("WebRTC: listening on %s; open %s in a browser (LAN only: no STUN/TURN)",
                 bind_description(host, self.port), " or ".join(self.webrtc.urls(host, self.port)))
