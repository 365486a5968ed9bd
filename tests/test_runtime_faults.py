"""Faults a deployment meets: stop signals mid-run, unwritable summaries, unbounded growth."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.timing import RECENT_SAMPLES, StageTimer

REPO_ROOT = Path(__file__).resolve().parents[1]


def _start_cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime.enhance", *map(str, args), "--headless"], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _playable_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count


@pytest.mark.shared
@pytest.mark.parametrize("signum, code, loop", [(signal.SIGTERM, 143, ()), (signal.SIGINT, 130, ()),
                                                (signal.SIGHUP, 129, ()), (signal.SIGTERM, 143, ("--pipelined",))])
def test_stop_signal_finishes_the_frame_and_closes_every_output(tmp_path, shared_dir, detector_path,
                                                               fast_sr_artifact, signum, code, loop):
    out, events, summary = tmp_path / "out.avi", tmp_path / "events.jsonl", tmp_path / "summary.json"
    proc = _start_cli("--source", shared_dir / "data/scenes/street-video-1080p.mp4", "--model", fast_sr_artifact,
                      "--output", out, "--events", events, "--summary", summary, "--detector-model", detector_path,
                      *loop)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (events.is_file() and events.stat().st_size > 2000):
        time.sleep(0.1)  # some frames written
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr[-2000:]
    written = json.loads(summary.read_text())
    assert 0 < written["frames"] < 105 and written["stopped_by_signal"] == signum
    assert _playable_frames(out) == written["frames"]  # the video was finalised
    lines = events.read_text().splitlines()
    assert all(json.loads(line) for line in lines) and {json.loads(lines[-1])["frame"]} <= set(range(105))


@pytest.mark.shared
def test_unwritable_summary_is_refused_before_the_run(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    """A --summary that cannot be written is refused at start (it used to fail after the whole run)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")  # a file where the folder should be: unwritable even for root
    proc = _start_cli("--source", shared_dir / "data/scenes/group-6faces.jpg", "--model", fast_sr_artifact,
                      "--summary", blocker / "s.json", "--detector-model", detector_path)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "--summary" in stderr and "not writable" in stderr
    assert "Traceback" not in stderr


def _nan_model(folder: Path) -> Path:
    """A manifest whose ONNX turns every face into NaN (bilinear resize, then times NaN)."""
    from onnx import TensorProto, helper, save

    from runtime.contract import write_manifest
    from tests.conftest import manifest_for

    graph = helper.make_graph(
        [helper.make_node("Resize", ["lr", "", "scales"], ["up"], mode="linear"),
         helper.make_node("Mul", ["up", "nan"], ["sr"])], "nan_sr",
        [helper.make_tensor_value_info("lr", TensorProto.FLOAT, ["N", 3, 16, 16])],
        [helper.make_tensor_value_info("sr", TensorProto.FLOAT, ["N", 3, 128, 128])],
        initializer=[helper.make_tensor("scales", TensorProto.FLOAT, [4], [1, 1, 8, 8]),
                     helper.make_tensor("nan", TensorProto.FLOAT, [], [float("nan")])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    save(model, str(folder / "nan.onnx"))
    return write_manifest(folder / "nan.json", manifest_for(folder / "nan.onnx"))


@pytest.mark.shared
def test_a_model_that_outputs_nan_enhances_no_face_and_says_so(tmp_path, shared_dir, detector_path):
    summary, out = tmp_path / "summary.json", tmp_path / "frames"
    photo = shared_dir / "data/scenes/group-6faces.jpg"
    proc = _start_cli("--source", photo, "--model", _nan_model(tmp_path / "m"), "--enhance-all", "--upscale", "2",
                      "--output", out, "--summary", summary, "--detector-model", detector_path)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    written = json.loads(summary.read_text())
    assert written["faces"] >= 6 and written["faces_enhanced"] == 0 and written["faces_not_finite"] == written["faces"]
    assert "was not finite (NaN/Inf)" in stderr
    (written_frame,) = out.iterdir()
    shown, recorded = cv2.imread(str(written_frame)), cv2.imread(str(photo))
    upscaled = cv2.resize(recorded, (shown.shape[1], shown.shape[0]), interpolation=cv2.INTER_CUBIC)
    assert np.abs(shown.astype(int) - upscaled).mean() < 3  # the faces are the recorded pixels, not a blur of NaN


@pytest.mark.shared
def test_an_existing_summary_is_not_replaced_without_overwrite(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    summary = tmp_path / "summary.json"
    summary.write_text('{"from": "an earlier run"}')
    photo = shared_dir / "data/scenes/group-6faces.jpg"
    args = ("--source", photo, "--model", fast_sr_artifact, "--summary", summary, "--detector-model", detector_path)
    proc = _start_cli(*args)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--summary" in stderr and "already exists" in stderr
    assert json.loads(summary.read_text()) == {"from": "an earlier run"}
    proc = _start_cli(*args, "--overwrite")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-2000:]
    assert json.loads(summary.read_text())["frames"] == 1


def test_an_rtp_sdp_file_is_claimed_like_any_output():
    from runtime.outputs import file_outputs

    assert file_outputs(["rtp://127.0.0.1:5004?sdp=out.sdp", "video.mp4"]) == ["video.mp4", "out.sdp"]


def test_overwriting_a_frame_folder_leaves_only_the_new_frames(tmp_path):
    from runtime.outputs import ImageFolderSink
    from runtime.records import OutputClaim

    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):  # an earlier, longer run
        (folder / f"frame_{i:06d}.jpg").write_bytes(b"old")
    (folder / "notes.txt").write_text("not a frame")
    with OutputClaim(folder, "--output", overwrite=True):
        sink = ImageFolderSink(folder)
        for _ in range(2):
            sink.write(np.zeros((8, 8, 3), np.uint8))
    assert sorted(p.name for p in folder.iterdir()) == ["frame_000000.jpg", "frame_000001.jpg", "notes.txt"]
    assert (folder / "frame_000001.jpg").read_bytes() != b"old"


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs (root only; skipped where mounting is not allowed): a disk that fills up during a run."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()[:200]}); needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.shared
@pytest.mark.parametrize("what", ["events", "crops", "avi", "mkv"])
def test_a_full_disk_ends_the_run_with_one_clear_error_and_a_summary(tmp_path, full_disk, shared_dir, detector_path,
                                                                     fast_sr_artifact, what):
    summary = tmp_path / "summary.json"  # on another disk: the summary is always written
    if what in ("events", "crops"):  # room for a few events or crops, then none
        (full_disk / "filler").write_bytes(b"x" * (1024 * 1024 - (8 if what == "events" else 64) * 1024))
    outputs = {"events": ["--events", full_disk / "events.jsonl"], "crops": ["--save-crops", full_disk / "crops"],
               "avi": ["--output", full_disk / "out.avi"], "mkv": ["--output", full_disk / "out.mkv"]}[what]
    proc = _start_cli("--source", shared_dir / "data/scenes/street-video-1080p.mp4", "--model", fast_sr_artifact,
                      "--upscale", "2", "--enhance-all", "--detector-model", detector_path, "--summary", summary,
                      "-q", *outputs)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 2, stderr[-2000:]
    assert "Traceback" not in stderr
    written = json.loads(summary.read_text())
    assert written["error"] and 0 < written["frames"] < 105
    assert stderr.count(" ERROR ") == 1, stderr[-2000:]
    if what in ("avi", "mkv"):  # the summary's count of playable frames is what really plays back
        video = full_disk / f"out.{what}"
        playable = re.search(r"(\d+) of (\d+) written frames are playable", written["error"])
        assert playable, written["error"]
        assert int(playable.group(1)) == _decodable_frames(video) > 0


def _decodable_frames(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    return count


def test_stage_timer_memory_is_bounded():
    timer = StageTimer()
    for i in range(RECENT_SAMPLES * 3):
        with timer.stage("sr"):
            pass
        timer.frame_done()
    stats = timer.samples["sr"]
    assert stats.count == RECENT_SAMPLES * 3 and len(stats.recent) == RECENT_SAMPLES
    assert timer.summary()["sr"]["frames"] == RECENT_SAMPLES * 3


# --- outputs are never overwritten by accident ------------------------------------------------------------
def test_existing_outputs_are_refused_without_overwrite(tmp_path):
    from runtime.errors import SinkError
    from runtime.records import OutputClaim

    video = tmp_path / "out.mp4"
    video.write_bytes(b"an earlier run")
    with pytest.raises(SinkError, match="already exists; pass --overwrite"):
        OutputClaim(video, "--output")
    (tmp_path / "crops").mkdir()
    OutputClaim(tmp_path / "crops", "--save-crops").release()  # an empty folder is fine
    (tmp_path / "crops" / "track_00001.png").write_bytes(b"x")
    with pytest.raises(SinkError, match="--save-crops .* already exists"):
        OutputClaim(tmp_path / "crops", "--save-crops")
    events = tmp_path / "events.jsonl"
    events.write_text('{"frame": 0}\n')
    with pytest.raises(SinkError, match="--append-events"):
        OutputClaim(events, "--events")
    with OutputClaim(video, "--output", overwrite=True) as claim:
        assert claim.lock.is_file()
    assert not claim.lock.exists() and video.read_bytes() == b"an earlier run"  # nothing touched yet


def test_an_output_in_use_by_another_run_is_refused_and_a_stale_lock_is_taken(tmp_path):
    from runtime.errors import SinkError
    from runtime.records import OutputClaim

    path = tmp_path / "out.avi"
    with OutputClaim(path, "--output"):
        with pytest.raises(SinkError, match=f"being written by another run \\(pid {os.getpid()}"):
            OutputClaim(path, "--output", overwrite=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / ".out.avi.lock").write_text(dead.stdout)  # a run that crashed and left its lock
    with OutputClaim(path, "--output") as claim:
        assert claim.lock.read_text().strip() == str(os.getpid())


def test_a_lock_left_by_a_killed_run_is_taken_even_when_its_pid_is_alive_again(tmp_path):
    """In a container the restarted run is PID 1 again, as was the run SIGKILL ended: the lock is the kernel's
    (flock), so it went with the process; only a living holder refuses the path."""
    from runtime.errors import SinkError
    from runtime.records import OutputClaim

    path = tmp_path / "out.avi"
    (tmp_path / ".out.avi.lock").write_text("1\n")  # the killed run was pid 1, and pid 1 is alive
    with OutputClaim(path, "--output") as claim:
        assert claim.lock.read_text().strip() == str(os.getpid())
    holder = subprocess.Popen([sys.executable, "-c", "import sys; from runtime.records import OutputClaim; "
                               f"c = OutputClaim({str(path)!r}, '--output'); print('held', flush=True); "
                               "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SinkError, match=f"being written by another run \\(pid {holder.pid}"):
            OutputClaim(path, "--output")
        holder.kill()  # SIGKILL: no clean-up runs
        holder.wait(timeout=30)
        with OutputClaim(path, "--output") as claim:
            assert claim.lock.read_text().strip() == str(os.getpid())
    finally:
        holder.kill()


def test_events_can_be_appended(tmp_path):
    from runtime.records import EventLog

    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write({"frame": 0})
    with EventLog(path, append=True) as log:
        log.write({"frame": 1})
    assert [json.loads(line)["frame"] for line in path.read_text().splitlines()] == [0, 1]


def test_a_failing_event_write_stops_the_run_with_a_clear_error(tmp_path):
    from runtime.errors import SinkError
    from runtime.records import EventLog

    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    log = EventLog(tmp_path / "events.jsonl")
    log._file.close()
    log._file = FullDisk()
    with pytest.raises(SinkError, match="write failed \\(No space left on device\\)"):
        log.write({"frame": 3})


def test_crops_get_normal_permissions(tmp_path):
    """Crops used to be written with mkstemp's 0600: unreadable for an uploader running as another user."""
    import numpy as np

    from runtime.records import BestCropStore

    old = os.umask(0o022)
    try:
        path = BestCropStore(tmp_path / "crops").offer(1, np.zeros((8, 8, 3), np.uint8), 40, np.zeros((8, 8, 3), np.uint8))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def _limit_file_size(limit: int):
    """preexec_fn: writes past `limit` bytes fail with EFBIG (Python ignores SIGXFSZ), like a full disk."""
    import resource

    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.shared
@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_a_video_that_cannot_be_written_stops_the_run_and_the_summary_says_so(tmp_path, shared_dir, detector_path,
                                                                               fast_sr_artifact, suffix):
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    out, summary = tmp_path / f"out{suffix}", tmp_path / "summary.json"
    proc = subprocess.run([sys.executable, "-m", "runtime.enhance", "--source", video, "--model", fast_sr_artifact,
                           "--output", out, "--max-frames", "60", "--summary", summary, "--headless",
                           "--detector-model", detector_path, "--detect-every", "10"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size(2_000_000))
    assert proc.returncode == 2, proc.stderr[-2000:]
    printed = json.loads(proc.stdout)
    assert printed["error"] and "check free space" in printed["error"]
    assert printed["frames"] < 60  # stopped at the failure, not after the whole run
    assert json.loads(summary.read_text()) == printed  # the small summary still got written
    assert out.stat().st_size <= 2_000_000


@pytest.mark.shared
def test_a_complete_video_passes_the_read_back_check(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    proc = subprocess.run([sys.executable, "-m", "runtime.enhance", "--source", video, "--model", fast_sr_artifact,
                           "--output", tmp_path / "out.mp4", "--max-frames", "12", "--headless",
                           "--detector-model", detector_path, "--detect-every", "6"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["error"] is None
    assert _playable_frames(tmp_path / "out.mp4") == 12


def test_best_crop_store_remembers_a_bounded_number_of_tracks(tmp_path):
    import numpy as np

    from runtime.records import BestCropStore

    store = BestCropStore(tmp_path / "crops", remember=3, keep_files=None)
    crop = np.zeros((16, 16, 3), np.uint8)
    for track_id in range(1, 8):
        assert store.offer(track_id, crop, 20, crop) is not None
    assert len(store._scores) == 3 and list(store._scores) == [5, 6, 7]
    assert store.offer(7, crop, 20, crop) is None  # a remembered track keeps its best
    assert len(list((tmp_path / "crops").iterdir())) == 7  # keep_files=None: every saved file stays on disk


def test_crop_retention_keeps_the_most_recent_tracks_files(tmp_path):
    """A 24/7 camera: the crops of the `keep_files` most recently saved tracks stay, older ones are deleted."""
    import numpy as np

    from runtime.records import BestCropStore

    store = BestCropStore(tmp_path / "crops", keep_files=3)
    crop = np.zeros((16, 16, 3), np.uint8)
    for track_id in range(1, 8):
        store.offer(track_id, crop, 20, crop)
    assert sorted(p.name for p in (tmp_path / "crops").iterdir()) == [f"track_{i:05d}.png" for i in (5, 6, 7)]
    assert store.saved(4) is None and store.saved(7) == tmp_path / "crops" / "track_00007.png"


def test_calibration_to_an_unwritable_place_is_one_clear_error(tmp_path, caplog):
    import numpy as np

    from calibration import CalibrationError, save_set

    with pytest.raises(CalibrationError, match="--out .*cannot write the calibration set"):
        save_set(tmp_path / "no-such-folder" / "calib.npz", np.zeros((64, 3, 16, 16), np.float32), "test")


@pytest.mark.shared
def test_an_onnx_that_is_not_a_face_detector_is_refused_at_start(tmp_path, shared_dir, sr_artifact):
    code = subprocess.run([sys.executable, "-m", "runtime.enhance", "--source",
                           str(shared_dir / "data/scenes/group-6faces.jpg"), "--model", str(sr_artifact),
                           "--detector-model", str(sr_artifact.with_suffix(".onnx")), "--headless"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert code.returncode == 2 and "cannot load the face detector" in code.stderr
    assert "Traceback" not in code.stderr


def test_weights_whose_config_metadata_is_not_json_name_the_file_and_field(tmp_path):
    import torch
    from safetensors.torch import save_file

    from models import WeightsError, create_model

    path = tmp_path / "w.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"model": "dic", "config": "{not json"})
    with pytest.raises(WeightsError, match=r"w\.safetensors: its metadata field 'config' is not JSON"):
        create_model("dic", weights=path)


def test_an_export_stopped_by_sigterm_leaves_no_file(tmp_path):
    """SIGTERM mid-export (the ONNX being written or checked): no temporary or partial file stays."""
    proc = subprocess.Popen([sys.executable, "-m", "export.build", "--model", "pfsr", "--random-init",
                             "--precision", "int8", "--outdir", str(tmp_path)], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(tmp_path.iterdir()):
        time.sleep(0.05)  # until its temporary ONNX exists
    assert any(tmp_path.iterdir()), "the export wrote no temporary file"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "nothing was published" in stderr
    assert not list(tmp_path.iterdir())


def test_a_pickle_that_runs_code_is_refused_without_advice_to_unpickle_it(tmp_path):
    import pickle

    from models import WeightsError
    from models.weights import read_state_dict

    class Payload:
        def __reduce__(self):
            import posix
            return posix.system, ("true",)

    import torch
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, str(path), pickle_module=pickle)
    with pytest.raises(WeightsError, match="refused") as err:
        read_state_dict(path)
    assert "weights_only=False" not in str(err.value) and "never" in str(err.value)


class _BufferingWriter:
    """A cv2.VideoWriter that keeps every frame in its buffer: the file does not grow (as FFmpeg's 256 KB
    chunks do not for a quiet, low-bitrate video)."""

    def __init__(self, *args):
        pass

    def isOpened(self):
        return True

    def write(self, frame):
        pass

    def release(self):
        pass


def test_a_video_file_that_does_not_grow_is_only_an_error_when_it_has_no_room(tmp_path, monkeypatch):
    import numpy as np

    from runtime.errors import SinkError
    from runtime.outputs import files

    monkeypatch.setattr(files.cv2, "VideoWriter", _BufferingWriter)
    frame = np.zeros((32, 32, 3), np.uint8)
    buffering = files.VideoFileSink(tmp_path / "quiet.mp4")
    for _ in range(3 * files.SIZE_CHECK_EVERY):  # plenty of room: buffered, not failed
        buffering.write(frame)
    assert buffering.frames == 3 * files.SIZE_CHECK_EVERY

    monkeypatch.setattr(files, "_room_left", lambda path, size: 4096)  # a full disk
    full = files.VideoFileSink(tmp_path / "full.mp4")
    with pytest.raises(SinkError, match="check free space"):
        for _ in range(files.SIZE_CHECK_EVERY):
            full.write(frame)
    assert full.frames == files.SIZE_CHECK_EVERY
