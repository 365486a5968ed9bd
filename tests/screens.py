"""Screenshots of a virtual X screen (the `virtual_screen` fixture is in conftest.py): xwd, read back as BGR."""
from __future__ import annotations

import os
import subprocess

import numpy as np


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
