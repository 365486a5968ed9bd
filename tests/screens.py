"""A virtual X screen for tests that look at what a person sees: Xvfb, screenshots with xwd, keys with xdotool."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import numpy as np
import pytest

TOOLS = ("Xvfb", "xdotool", "xwd")


@pytest.fixture(scope="module")
def virtual_screen():
    """An Xvfb display (":N") for this module; skipped with the reason when the tools are missing."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (Debian: apt-get install xvfb xdotool x11-apps)")
    free = [n for n in range(70, 100) if not os.path.exists(f"/tmp/.X{n}-lock")]
    if not free:
        pytest.skip("no free X display number in :70-:99")
    display = f":{free[0]}"
    server = subprocess.Popen(["Xvfb", display, "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    if server.poll() is not None:
        pytest.skip(f"Xvfb could not start on {display}")
    yield display
    server.terminate()
    server.wait(10)


def screenshot(display: str) -> np.ndarray:
    """The whole virtual screen as BGR uint8."""
    shot = subprocess.run(["xwd", "-root", "-silent"], env={**os.environ, "DISPLAY": display}, capture_output=True,
                          check=True)
    return read_xwd(shot.stdout)


def read_xwd(data: bytes) -> np.ndarray:
    """A 24/32-bit TrueColor XWD screenshot (what `xwd -root` writes) -> BGR uint8."""
    header = np.frombuffer(data[:100], ">u4")
    header_size, width, height = int(header[0]), int(header[4]), int(header[5])
    bits_per_pixel, bytes_per_line, ncolors = int(header[11]), int(header[12]), int(header[19])
    step = bits_per_pixel // 8
    assert step in (3, 4), f"expected a 24/32-bit screenshot, got {bits_per_pixel} bits per pixel"
    start = header_size + 12 * ncolors
    pixels = np.frombuffer(data[start:start + height * bytes_per_line], np.uint8).reshape(height, bytes_per_line)
    return pixels[:, :width * step].reshape(height, width, step)[:, :, :3].copy()  # B, G, R(, X): LSB first
