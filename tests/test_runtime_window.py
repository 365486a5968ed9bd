"""`--output display://0` as a person sees it: the runtime's window on a virtual X screen (Xvfb), a screenshot
of it compared with the video's frames, and the window's keys (v: next view, q: quit) pressed with xdotool.

Needs Xvfb, xdotool and xwd (Debian: xvfb, xdotool, x11-apps) and an OpenCV with a GUI. The base install keeps
opencv-python-headless, so the test builds a small environment once (~/.cache/fsr-edge/gui-env-HASH, one per
test environment: the test environment's packages plus opencv-python of the same version) and runs the
runtime there.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import hashlib
import sysconfig

import cv2
import numpy as np
import pytest

from tests.helpers import long_frame_folder
from tests.screens import screenshot

REPO_ROOT = Path(__file__).resolve().parents[1]
# One GUI environment per test environment: a venv made from inside another venv is based on the base
# interpreter, so `--system-site-packages` would hide this environment's packages; a .pth file adds them instead.
GUI_ENV = Path.home() / ".cache" / "fsr-edge" / f"gui-env-{hashlib.sha256(sys.prefix.encode()).hexdigest()[:8]}"
pytestmark = pytest.mark.shared


def _link_test_environment(python: Path) -> None:
    """Make the GUI env see this interpreter's packages (after its own, so its cv2 is the one imported)."""
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in ours)
    (Path(site) / "fsr_edge_test_env.pth").write_text(lines)


def _gui_python() -> Path:
    python = GUI_ENV / "bin" / "python"
    check = [str(python), "-c", "import cv2, re, sys, numpy, onnxruntime, PIL; "
                                "sys.exit(not re.search(r'(QT|GTK\\+):\\s+YES', cv2.getBuildInformation()))"]
    if python.is_file() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    version = importlib.metadata.version("opencv-python-headless")
    subprocess.run([sys.executable, "-m", "venv", str(GUI_ENV)], check=True)
    _link_test_environment(python)
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"opencv-python=={version}"],
                             capture_output=True, text=True, timeout=600)
    checked = subprocess.run(check, capture_output=True, text=True)
    if install.returncode != 0 or checked.returncode != 0:
        pytest.skip(f"no GUI OpenCV could be installed into {GUI_ENV}: {install.stderr[-300:]} {checked.stderr[-300:]}")
    return python


def _best_match(shot: np.ndarray, video: Path) -> float:
    """Smallest mean absolute difference (grey levels) between the screen and any video frame, over the
    vertical offsets a window frame or toolbar may add."""
    small = lambda image: cv2.resize(image, None, fx=0.125, fy=0.125, interpolation=cv2.INTER_AREA)  # noqa: E731
    screen = small(shot).astype(np.int16)
    capture, best = cv2.VideoCapture(str(video)), 255.0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frame = small(frame).astype(np.int16)
        h, w = frame.shape[:2]
        for dy in range(0, screen.shape[0] - h + 1):
            best = min(best, float(np.abs(screen[dy:dy + h, :w] - frame).mean()))
    return best


def _wait_for_window(display: str, run: subprocess.Popen, timeout: float = 60.0) -> list[str]:
    """The ids of the visible windows named fsr-edge (a GUI toolkit may map more than one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and run.poll() is None:
        found = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", "fsr-edge"], capture_output=True,
                               text=True, env={**os.environ, "DISPLAY": display})
        if found.stdout.strip():
            return found.stdout.split()
        time.sleep(0.2)
    run.kill()
    _, err = run.communicate(timeout=30)
    raise AssertionError(f"the runtime's window did not appear (exit code {run.returncode}); its stderr:\n"
                         f"{err[-2000:]}")


def _focus_one_of(windows: list[str], env: dict, display: str, run: subprocess.Popen) -> None:
    """Give the keyboard focus to the first of the windows that takes it; an id found a moment ago may be gone
    (BadWindow: a GUI toolkit can map its window again), so look again until one takes it."""
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        for window in windows:
            if _run_quietly(["xdotool", "windowfocus", "--sync", window], env) == 0:
                return
        time.sleep(0.3)
        windows = _wait_for_window(display, run)
    raise AssertionError(f"none of the runtime's windows {windows} took the keyboard focus")


def _run_quietly(command: list[str], env: dict, timeout: float = 5.0) -> int | None:
    """The exit code, or None when the command did not finish in time (xdotool --sync waits for ever)."""
    try:
        return subprocess.run(command, env=env, capture_output=True, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        return None


def _wait_for_a_picture(display: str, timeout: float = 60.0) -> np.ndarray:
    """A screenshot once the window shows more than black (a busy machine draws the first frame late: a CI run
    once saw only black after 15 s)."""
    deadline = time.monotonic() + timeout
    time.sleep(1.0)
    shot = screenshot(display)
    while shot.mean() < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
        shot = screenshot(display)
    return shot


def test_the_window_shows_the_video_and_its_keys_work(virtual_screen, shared_dir, detector_path, fast_sr_artifact,
                                                      tmp_path):
    screen = virtual_screen
    python = _gui_python()
    video = shared_dir / "data" / "scenes" / "street-video-1080p.mp4"
    frames = long_frame_folder(video, tmp_path / "frames")  # still running when the keys come, however fast
    env = {**os.environ, "DISPLAY": screen, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [str(python), "-m", "runtime.enhance", "--source", str(frames), "--model", str(fast_sr_artifact),
         "--output", "display://0", "--detector-model", str(detector_path), "--detect-every", "3", "--no-fps", "-q"],
        cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        windows = _wait_for_window(screen, run)
        shot = _wait_for_a_picture(screen)
        _focus_one_of(windows, env, screen, run)
        subprocess.run(["xdotool", "key", "v"], env=env, check=True)
        time.sleep(0.5)
        subprocess.run(["xdotool", "key", "q"], env=env, check=True)
        out, err = run.communicate(timeout=60)
    finally:
        run.kill()
    assert run.returncode == 0, err[-2000:]
    assert "view: gallery" in err and "stopped from the window" in err
    summary = json.loads(out[out.index("{"):])
    assert 0 < summary["frames"] < 2000  # q ended the run before the frames did
    assert _best_match(shot, video) < 12.0  # the screen shows a frame of the video (boxes and labels aside)
