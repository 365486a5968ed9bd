"""`--output rtsp://...`: the runtime publishes H.264 to an RTSP listener started inside the test (PyAV's FFmpeg
with rtsp_flags=listen, on 127.0.0.1), and the frames are read back. `--output rtp://...`: the same over RTP/UDP,
received with the SDP file the runtime writes."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.ports import free_port, wait_until_bound

av = pytest.importorskip("av", reason="PyAV is not installed (pip install -e \".[live]\")")

from runtime.enhance import main  # noqa: E402

pytestmark = pytest.mark.shared


class _Listener(threading.Thread):
    """An RTSP server for one publisher: decodes what it receives and keeps the frame sizes."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.sizes, self.error = url, [], None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            self.ready.set()
            with av.open(self.url, options={"rtsp_flags": "listen", "listen_timeout": "60"}) as container:
                for frame in container.decode(video=0):
                    self.sizes.append((frame.width, frame.height))
        except av.error.FFmpegError as err:  # the publisher hung up: end of stream
            self.error = err


def test_published_stream_is_read_back(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/enhanced"
    listener = _Listener(url)
    listener.start()
    listener.ready.wait(5)
    wait_until_bound(port)
    code = main(["--source", str(shared_dir / "data" / "scenes" / "street-video-1080p.mp4"), "--model",
                 str(fast_sr_artifact), "--output", url, "--output", str(tmp_path / "out.mp4"), "--max-frames", "20",
                 "--detect-every", "5", "--headless", "--detector-model", str(detector_path)])
    listener.join(timeout=30)
    assert code == 0
    assert len(listener.sizes) >= 15, listener.error  # x264 may hold back the last few on a hang-up
    assert set(listener.sizes) == {(1920, 1080)}


def test_rtsp_without_a_server_keeps_the_run_going(tmp_path, shared_dir, detector_path, fast_sr_artifact, caplog):
    url = f"rtsp://127.0.0.1:{free_port()}/nobody"
    code = main(["--source", str(shared_dir / "data" / "scenes" / "street-video-1080p.mp4"), "--model",
                 str(fast_sr_artifact), "--output", url, "--output", str(tmp_path / "out.mp4"), "--max-frames", "5",
                 "--detect-every", "5", "--headless", "--detector-model", str(detector_path)])
    assert code == 0  # the file output is complete; the stream retries in the background
    assert "cannot connect" in caplog.text
    assert (tmp_path / "out.mp4").stat().st_size > 0


class _ClosingListener(_Listener):
    """Takes `limit` frames, then hangs up (a VMS restarting)."""

    def __init__(self, url: str, limit: int):
        super().__init__(url)
        self.limit = limit

    def run(self) -> None:
        self.ready.set()
        with av.open(self.url, options={"rtsp_flags": "listen", "listen_timeout": "60"}) as container:
            for frame in container.decode(video=0):
                self.sizes.append((frame.width, frame.height))
                if len(self.sizes) >= self.limit:
                    return


def test_sink_reconnects_when_the_server_comes_back():
    import numpy as np

    from runtime.outputs.rtsp import RtspSink

    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/vms"
    first = _ClosingListener(url, limit=5)
    first.start()
    wait_until_bound(port)
    sink = RtspSink(url, fps=25)
    view = np.zeros((64, 96, 3), np.uint8)
    second = None
    for index in range(400):
        view[:] = index % 255
        sink.write(view)
        if not first.is_alive() and second is None:
            second = _Listener(url)  # the server is back
            second.start()
        if second is not None and len(second.sizes) >= 5:
            break
        time.sleep(0.02)
    sink.close()
    assert len(first.sizes) == 5
    assert second is not None and len(second.sizes) >= 5
    assert sink.reconnects >= 1 and sink.dropped >= 1


class _RtpReceiver(threading.Thread):
    """Receives the RTP stream described by an SDP file (as ffplay or VLC would) and keeps the frame sizes."""

    def __init__(self, sdp_path, wanted: int):
        super().__init__(daemon=True)
        self.sdp_path, self.wanted, self.sizes, self.error = sdp_path, wanted, [], None

    def run(self) -> None:
        try:
            with av.open(str(self.sdp_path), format="sdp", timeout=20,
                         options={"protocol_whitelist": "file,udp,rtp", "reorder_queue_size": "0"}) as container:
                for packet in container.demux(video=0):
                    try:
                        frames = packet.decode()
                    except av.error.InvalidDataError:  # joined mid-stream: P-frames before the next key frame
                        continue
                    self.sizes += [(frame.width, frame.height) for frame in frames]
                    if len(self.sizes) >= self.wanted:
                        return
        except av.error.FFmpegError as err:
            self.error = err


def test_rtp_stream_is_received_with_the_written_sdp(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    from runtime.outputs import open_output, parse_output

    port, sdp = free_port(), tmp_path / "enhanced.sdp"
    uri = parse_output(f"rtp://127.0.0.1:{port}?sdp={sdp}")
    assert (uri.scheme, uri.location, uri.sdp) == ("rtp", f"rtp://127.0.0.1:{port}", str(sdp))
    sink = open_output(uri, headless=True, fps=10)  # a key frame every 20 frames
    frame = np.zeros((360, 640, 3), np.uint8)
    sink.write(frame)  # the first frame opens the stream and writes the SDP
    assert f"m=video {port} RTP/AVP 96" in sdp.read_text()
    receiver = _RtpReceiver(sdp, wanted=10)
    receiver.start()
    wait_until_bound(port, "udp")  # RTP sent before the receiver binds is lost, as with any UDP receiver
    for i in range(60):
        frame[:] = (i * 4) % 256
        sink.write(frame)
        time.sleep(0.02)
    sink.close()
    receiver.join(timeout=30)
    assert len(receiver.sizes) >= 10, receiver.error  # joined mid-stream: SPS/PPS are repeated in-band
    assert set(receiver.sizes) == {(640, 360)}
