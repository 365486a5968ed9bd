"""Publish the views as H.264 through PyAV's bundled FFmpeg (`pip install -e ".[live]"`):

- `--output rtsp://HOST:PORT/PATH`: to an RTSP server (a VMS, MediaMTX, an FFmpeg listener), over TCP. The
  connection opens at the first frame (its size sets the stream's). When the server goes away the sink drops
  frames (counted) and reconnects with backoff, so a VMS restart never ends the run.
- `--output rtp://HOST:PORT[?sdp=FILE]`: plain RTP over UDP to a receiver (payload type 96, SPS/PPS repeated
  in-band so a receiver can join at any key frame). The SDP a receiver needs (`ffplay -protocol_whitelist
  file,udp,rtp FILE`, VLC, GStreamer's sdpdemux) is logged and, with `?sdp=FILE`, written there.
"""
from __future__ import annotations

import logging
import time
from fractions import Fraction

import numpy as np

from ..errors import SinkError
from .base import DEFAULT_FPS, Sink

log = logging.getLogger(__name__)

RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0)  # then every 8 s
ENCODER_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency"}


def _pyav():
    try:
        import av
    except ImportError as err:
        raise SinkError("--output rtsp://... and rtp://... need PyAV (FFmpeg with RTSP/RTP muxers): "
                        "pip install -e \".[live]\" (or pip install av).") from err
    return av


class RtspSink(Sink):
    """H.264 over RTSP (TCP), one stream at the first view's size (rounded up to even)."""

    def __init__(self, url: str, fps: float | None = None):
        self.av = _pyav()
        self.url = url
        self.fps = round(fps or DEFAULT_FPS)
        self.frames = self.dropped = self.reconnects = 0
        self._container = self._stream = None
        self._size: tuple[int, int] | None = None
        self._retry_at, self._failures, self._session_frames = 0.0, 0, 0

    def _open_container(self):
        return self.av.open(self.url, mode="w", format="rtsp", options={"rtsp_transport": "tcp"}, timeout=5.0)

    def _encoder_options(self) -> dict:
        return dict(ENCODER_OPTIONS)

    def _connect(self, width: int, height: int) -> None:
        container = self._open_container()
        stream = container.add_stream("libx264", rate=self.fps, options=self._encoder_options())
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, self.fps)
        self._container, self._stream = container, stream

    def write(self, view: np.ndarray, result=None) -> None:
        if self._size is None:
            self._size = (view.shape[1] + view.shape[1] % 2, view.shape[0] + view.shape[0] % 2)
        if self._container is None and not self._try_connect():
            self.dropped += 1
            return
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(view[:self._size[1], :self._size[0]]),
                                                format="bgr24")
        frame = frame.reformat(width=self._size[0], height=self._size[1], format="yuv420p")
        frame.pts = self.frames
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)  # the first mux also connects (RTSP ANNOUNCE/RECORD)
        except (self.av.error.FFmpegError, OSError) as err:
            self._connection_failed(err)
            self.dropped += 1
            return
        if self._session_frames == 0 and (self.frames or self._failures):
            self.reconnects += 1
            log.info("--output %s: connected again (reconnect %d)", self.url, self.reconnects)
        self._failures = 0
        self._session_frames += 1
        self.frames += 1

    def _try_connect(self) -> bool:
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._connect(*self._size)
        except (self.av.error.FFmpegError, OSError) as err:
            self._connection_failed(err)
            return False
        self._session_frames = 0
        return True

    def _connection_failed(self, err: Exception) -> None:
        """Close what is left, say so (once per outage), and wait before the next attempt."""
        if self._failures == 0:
            what = "the server went away" if self._session_frames else "cannot connect"
            log.warning("--output %s: %s (%s); retrying in the background, frames are dropped meanwhile", self.url,
                        what, err)
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # the socket is already gone; nothing left to flush
                pass
        self._container = self._stream = None
        self._session_frames = 0
        self._retry_at = time.monotonic() + RECONNECT_DELAYS_S[min(self._failures, len(RECONNECT_DELAYS_S) - 1)]
        self._failures += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):  # flush the encoder
                self._container.mux(packet)
            self._container.close()
        except (self.av.error.FFmpegError, OSError) as err:
            log.warning("--output %s: closing: %s", self.url, err)
        finally:
            self._container = self._stream = None
        log.info("--output %s: %d frames published, %d dropped, %d reconnects", self.url, self.frames,
                 self.dropped, self.reconnects)


RTP_PAYLOAD_TYPE = 96  # the first dynamic payload type, FFmpeg's default for H.264


class RtpSink(RtspSink):
    """H.264 as RTP over UDP to HOST:PORT; `sdp_path` receives the session description."""

    def __init__(self, url: str, fps: float | None = None, sdp_path: str | None = None):
        super().__init__(url, fps)
        self.sdp_path = sdp_path
        host_port = url.split("://", 1)[1].split("/", 1)[0]
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)

    def _open_container(self):
        return self.av.open(self.url, mode="w", format="rtp")

    def _encoder_options(self) -> dict:
        # a key frame every 2 s with SPS/PPS in-band: a receiver can join at any time (UDP has no session)
        return dict(ENCODER_OPTIONS, **{"x264-params": f"repeat-headers=1:keyint={2 * self.fps}"})

    def _connect(self, width: int, height: int) -> None:
        super()._connect(width, height)
        if self.frames == 0:
            self._publish_sdp()

    def sdp(self) -> str:
        return (f"v=0\no=- 0 0 IN IP4 {self.host}\ns=fsr-edge enhanced view\nc=IN IP4 {self.host}\nt=0 0\n"
                f"m=video {self.port} RTP/AVP {RTP_PAYLOAD_TYPE}\na=rtpmap:{RTP_PAYLOAD_TYPE} H264/90000\n"
                f"a=fmtp:{RTP_PAYLOAD_TYPE} packetization-mode=1\n")

    def _publish_sdp(self) -> None:
        log.info("--output %s: H.264 RTP, receive it with this SDP%s:\n%s", self.url,
                 f" (written to {self.sdp_path})" if self.sdp_path else "", self.sdp())
        if self.sdp_path:
            try:
                with open(self.sdp_path, "w") as file:
                    file.write(self.sdp())
            except OSError as err:
                raise SinkError(f"--output {self.url}: cannot write the SDP file {self.sdp_path}: {err}") from err
