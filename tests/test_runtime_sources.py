"""runtime.sources: the scheme table, opening files/folders, and live sources that drop old frames and
reopen with backoff when the camera disappears."""
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.errors import SourceError
from runtime.sources import (Backoff, ImageListSource, LiveSource, ReadStatus, SourceURI, VideoFileSource,
                             open_source, parse_uri)


# --- parsing -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, scheme, location", [
    ("0", "camera", "0"),
    ("camera://2", "camera", "2"),
    ("/dev/video0", "v4l2", "/dev/video0"),
    ("v4l2:///dev/video1", "v4l2", "/dev/video1"),
    ("rtsp://user:pw@cam.local/live", "rtsp", "rtsp://user:pw@cam.local/live"),
    ("RTSP://10.0.0.5:8554/s", "rtsp", "rtsp://10.0.0.5:8554/s"),
    ("http://10.0.0.2:8080/video.mjpg", "http", "http://10.0.0.2:8080/video.mjpg"),
    ("videotestsrc ! videoconvert ! appsink", "gstreamer", "videotestsrc ! videoconvert ! appsink"),
])
def test_parse_uri_schemes(text, scheme, location):
    uri = parse_uri(text)
    assert (uri.scheme, uri.location, uri.text) == (scheme, location, text)


def test_parse_uri_ports_and_live_flag():
    assert parse_uri("rtsp://cam.local/live").port == 554  # RTSP default port
    assert parse_uri("rtsp://10.0.0.5:8554/s").port == 8554
    assert parse_uri("0").is_live and parse_uri("rtsp://h/p").is_live and parse_uri("a ! appsink").is_live
    assert not parse_uri("clip.mp4").is_live


def test_parse_uri_csi_builds_argus_pipeline():
    uri = parse_uri("csi://1")
    assert uri.scheme == "csi" and uri.is_live
    assert "nvarguscamerasrc sensor-id=1" in uri.location and uri.location.endswith("max-buffers=1")


def test_parse_uri_paths(tmp_path):
    image = tmp_path / "a.PNG"
    image.write_bytes(b"")
    assert parse_uri(str(image)).scheme == "image"
    assert parse_uri(str(tmp_path)).scheme == "folder"
    video = parse_uri("clips/../clip.mp4")
    assert video.scheme == "file" and video.extension == ".mp4"
    assert Path(video.location).is_absolute() and ".." not in video.location
    assert parse_uri(f"file://{tmp_path}").scheme == "folder"


def test_source_uri_is_frozen():
    uri = parse_uri("0")
    with pytest.raises(AttributeError):
        uri.scheme = "file"


@pytest.mark.parametrize("text, fragment", [
    ("", "empty source"),
    ("   ", "empty source"),
    ("ftp://host/x", "unknown scheme 'ftp'"),
    ("camera://front", "not a number"),
    ("rtsp:///nohost", "has no host"),
    ("csi://left", "not a number"),
])
def test_parse_uri_errors_quote_the_input(text, fragment):
    with pytest.raises(SourceError, match=fragment) as info:
        parse_uri(text)
    assert repr(text.strip()) in str(info.value) or text.strip() == ""


# --- files and folders ---------------------------------------------------------------------------------
def _write_video(path: Path, frames: int, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), i * 20 % 256, np.uint8))
    writer.release()
    return path


def test_video_file_reads_every_frame_then_eos(tmp_path):
    path = _write_video(tmp_path / "clip.avi", 5)
    with open_source(str(path)) as source:
        assert isinstance(source, VideoFileSource) and source.fps == pytest.approx(10.0)
        statuses = [source.read()[0] for _ in range(7)]
    assert statuses == [ReadStatus.OK] * 5 + [ReadStatus.EOS] * 2


def test_folder_reads_images_in_name_order_and_skips_broken_ones(tmp_path):
    cv2.imwrite(str(tmp_path / "b.png"), np.full((8, 8), 200, np.uint8))  # grey stays grey (unchanged)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 4), np.uint8))  # BGRA keeps its alpha
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "notes.txt").write_text("ignored")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageListSource) and [p.name for p in source.paths] == ["a.png", "b.png", "c.jpg"]
    first, second, third, end = (source.read() for _ in range(4))
    assert first[0] is ReadStatus.OK and first[1].shape == (8, 8, 4)
    assert second[0] is ReadStatus.OK and second[1].shape == (8, 8)
    assert third == (ReadStatus.ERROR, None)
    assert end == (ReadStatus.EOS, None)


@pytest.mark.parametrize("make, fragment", [
    (lambda d: str(d / "missing.mp4"), "does not exist"),
    (lambda d: str(d / "missing.jpg"), "does not exist"),
    (lambda d: str(d), "holds no images"),
    (lambda d: (d / "fake.mp4").write_bytes(b"\0" * 100) and str(d / "fake.mp4"), "cannot decode"),
])
def test_unreadable_sources_name_the_source(tmp_path, make, fragment):
    text = make(tmp_path)
    with pytest.raises(SourceError, match=fragment) as info:
        open_source(text)
    assert text in str(info.value)


# --- live sources --------------------------------------------------------------------------------------
class FakeCapture:
    """Yields `frames` numbered frames (pixel value = running number), then fails like an unplugged camera."""

    counter = 0

    def __init__(self, frames: int, opened: bool = True, delay: float = 0.002):
        self.frames_left = frames
        self.opened = opened
        self.delay = delay
        self.released = False

    def isOpened(self):
        return self.opened and not self.released

    def read(self):
        time.sleep(self.delay)
        if self.frames_left <= 0:
            return False, None
        self.frames_left -= 1
        FakeCapture.counter += 1
        return True, np.full((4, 4, 3), FakeCapture.counter % 256, np.uint8)

    def release(self):
        self.released = True


def _opener(plan):
    """open_capture() that returns the captures in `plan` one after another (None = fails to open)."""
    opened = []

    def open_capture():
        item = plan[min(len(opened), len(plan) - 1)]
        opened.append(item)
        return item() if callable(item) else item
    return open_capture, opened


def test_backoff_doubles_up_to_the_cap_and_resets():
    backoff = Backoff(initial=0.5, maximum=3.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_live_source_reopens_after_camera_loss():
    uri = SourceURI("camera", "0", "0")
    # first capture: 3 frames then lost; then two failed reopen attempts; then a working camera.
    plan = [lambda: FakeCapture(3), lambda: FakeCapture(0, opened=False), None, lambda: FakeCapture(1000)]
    open_capture, opened = _opener(plan)
    source = LiveSource(uri, open_capture, Backoff(initial=0.01, maximum=0.05))
    try:
        frames = []
        deadline = time.monotonic() + 10
        while len(frames) < 10 and time.monotonic() < deadline:
            status, frame = source.read(timeout=0.5)
            if status is ReadStatus.OK:
                frames.append(int(frame[0, 0, 0]))
        assert len(frames) == 10, "frames stopped after the camera was lost"
        assert source.reconnects == 1 and len(opened) == 4
        assert frames == sorted(frames)  # newest frames only, never an older one again
    finally:
        source.close()
    assert source.read(timeout=0.1) == (ReadStatus.EOS, None)


class ExplodingCapture(FakeCapture):
    def read(self):
        raise RuntimeError("driver crashed")


def test_live_source_survives_a_capture_that_raises():
    plan = [lambda: ExplodingCapture(1), lambda: FakeCapture(1000)]
    open_capture, opened = _opener(plan)
    source = LiveSource(SourceURI("camera", "0", "0"), open_capture, Backoff(initial=0.01, maximum=0.01))
    try:
        assert source.read(timeout=2.0)[0] is ReadStatus.OK
        assert source.reconnects == 1
    finally:
        source.close()


def test_live_source_keeps_only_the_newest_frame():
    uri = SourceURI("camera", "0", "0")
    source = LiveSource(uri, lambda: FakeCapture(10_000, delay=0.001), Backoff(0.01, 0.01))
    try:
        first = source.read(timeout=1.0)
        time.sleep(0.2)  # ~200 frames arrive meanwhile; only the last is kept
        second = source.read(timeout=1.0)
        assert first[0] is second[0] is ReadStatus.OK
        assert source.frames_dropped > 50
        assert int(second[1][0, 0, 0]) != int(first[1][0, 0, 0])
    finally:
        source.close()


def test_live_source_times_out_while_the_stream_is_down():
    uri = SourceURI("rtsp", "rtsp://h/p", "rtsp://h/p", port=554)
    plan = [lambda: FakeCapture(1), None]  # one frame, then the stream never comes back
    open_capture, opened = _opener(plan)
    source = LiveSource(uri, open_capture, Backoff(initial=0.01, maximum=0.02))
    try:
        assert source.read(timeout=1.0)[0] is ReadStatus.OK
        assert source.read(timeout=0.2) == (ReadStatus.TIMEOUT, None)
        assert len(opened) > 2  # it keeps trying
    finally:
        source.close()
    assert not any(t.name.startswith("capture:") and t.is_alive() for t in threading.enumerate())


def test_live_source_that_never_opens_is_a_clear_error():
    uri = SourceURI("camera", "7", "7")
    with pytest.raises(SourceError, match=r"cannot open source '7'"):
        LiveSource(uri, lambda: FakeCapture(0, opened=False))


class HungCapture(FakeCapture):
    """A driver whose read() never returns (until the test ends)."""

    def __init__(self):
        super().__init__(1000)
        self.release_event = threading.Event()

    def read(self):
        self.release_event.wait(30)
        return False, None


def test_live_source_watchdog_replaces_a_hung_capture():
    hung = HungCapture()
    open_capture, opened = _opener([lambda: hung, lambda: FakeCapture(1000)])
    source = LiveSource(SourceURI("camera", "0", "0"), open_capture, Backoff(initial=0.01, maximum=0.01),
                        watchdog_s=0.3)
    try:
        deadline = time.monotonic() + 10
        status = ReadStatus.TIMEOUT
        while status is not ReadStatus.OK and time.monotonic() < deadline:
            status, _ = source.read(timeout=0.2)
        assert status is ReadStatus.OK, "no frame after the driver hung"
        assert source.hung_reads == 1 and source.reconnects == 1 and len(opened) == 2
    finally:
        hung.release_event.set()  # the abandoned thread returns, sees it is stale and releases its capture
        source.close()
    deadline = time.monotonic() + 5
    while not hung.released and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hung.released


def test_csi_and_gstreamer_without_gstreamer_say_how_to_fix_it(monkeypatch):
    import runtime.sources as sources
    from runtime.errors import SourceError

    monkeypatch.setattr(sources, "opencv_has", lambda feature: feature != "GStreamer")
    for text in ("csi://0", "gst://videotestsrc ! appsink"):
        with pytest.raises(SourceError, match="needs OpenCV with GStreamer.*JetPack"):
            sources.open_source(text)


def test_list_sources_names_cameras_and_what_this_opencv_can_read(capsys):
    from runtime.enhance import main

    assert main(["--list-sources"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cameras:") and "GStreamer" in out and "outputs:" in out


# --- damaged video files ---------------------------------------------------------------------------------
def _read_all(source) -> tuple[int, int]:
    ok = failed = 0
    while True:
        status, _ = source.read()
        if status is ReadStatus.EOS:
            return ok, failed
        ok += status is ReadStatus.OK
        failed += status is ReadStatus.ERROR


@pytest.mark.shared
def test_a_corrupt_segment_mid_file_is_read_past(tmp_path, shared_dir):
    """40 kB of garbage in the middle of the street video: 3 frames are lost, the 57 after them are read."""
    data = bytearray((shared_dir / "data/scenes/street-video-1080p.mp4").read_bytes())
    middle = len(data) // 2
    data[middle:middle + 40_000] = b"\x55" * 40_000
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    source = open_source(str(damaged))
    ok, failed = _read_all(source)
    assert source.frame_count == 105 and ok + failed == 105 and ok >= 100 and failed >= 1
    assert source.damage is None  # decoding recovered: nothing is missing but the damaged frames


def _truncated_avi(tmp_path: Path) -> Path:
    whole = _write_video(tmp_path / "whole.avi", 40, size=(160, 120))
    data = whole.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) * 6 // 10])
    return cut


def test_a_truncated_file_ends_with_the_damage_named(tmp_path):
    source = open_source(str(_truncated_avi(tmp_path)))
    ok, failed = _read_all(source)
    assert source.frame_count == 40 and 10 < ok < 40
    assert f"does not decode after frame {ok} of 40" in source.damage


@pytest.mark.shared
def test_a_run_on_a_truncated_file_fails_and_its_summary_says_where(tmp_path, detector_path, fast_sr_artifact):
    import json
    import subprocess
    import sys

    summary = tmp_path / "summary.json"
    run = subprocess.run([sys.executable, "-m", "runtime.enhance", "--source", str(_truncated_avi(tmp_path)),
                          "--model", str(fast_sr_artifact), "--detector-model", str(detector_path), "--headless",
                          "--summary", str(summary), "-q"], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1])
    written = json.loads(summary.read_text())
    assert run.returncode == 2, run.stderr[-2000:]
    assert "does not decode after frame" in written["error"] and written["frames"] < 40
    assert written["read_errors"] == 40 - written["frames"]


def test_input_width_resizes_frames_and_keeps_the_sources_counts(tmp_path):
    """--input-width: frames come out W wide with their aspect; fps, frame count and statuses are the file's."""
    from runtime.sources import SourceOptions, open_source

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 12.0, (320, 180))
    for value in range(3):
        writer.write(np.full((180, 320, 3), 60 * value, np.uint8))
    writer.release()
    with open_source(str(path), SourceOptions(input_width=160)) as source:
        assert (source.fps, source.frame_count, source.frames_dropped, source.damage) == (12.0, 3, 0, None)
        frames = [source.read(1.0) for _ in range(4)]
    assert [status for status, _ in frames] == [ReadStatus.OK] * 3 + [ReadStatus.EOS]
    assert all(frame.shape == (90, 160, 3) for _, frame in frames[:3])
