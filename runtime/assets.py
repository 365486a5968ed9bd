"""Helper files the runtime needs besides the SR model: the YuNet face detector.

`python -m runtime.assets fetch` downloads it once from OpenCV Zoo into the per-user cache and checks
its sha256; `python -m runtime.assets path` prints where the runtime looks for it.
"""
from __future__ import annotations

import argparse
import logging
import os
import urllib.request
from pathlib import Path

from .errors import AssetError
from .files import atomic_path, sha256_of

log = logging.getLogger(__name__)

DETECTOR_FILE = "face_detection_yunet_2023mar.onnx"
DETECTOR_URL = ("https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
                "face_detection_yunet_2023mar.onnx")
DETECTOR_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
DOWNLOAD_TIMEOUT_S = 60


def cache_dir() -> Path:
    """Per-user cache folder: $XDG_CACHE_HOME/fsr-edge, else ~/.cache/fsr-edge."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "fsr-edge"


def cached_detector_path() -> Path:
    return cache_dir() / DETECTOR_FILE


def detector_model_path(explicit: str | os.PathLike | None = None) -> Path:
    """The detector file to use: `explicit` (from --detector-model) if given, else the cached copy."""
    path = Path(explicit) if explicit else cached_detector_path()
    if path.is_file():
        return path
    received = f"--detector-model {path}" if explicit else f"no --detector-model, and no cached copy at {path}"
    raise AssetError(
        f"face detector model not found ({received}). Expected the YuNet file {DETECTOR_FILE}. Fix: "
        f"run `python -m runtime.assets fetch` once (downloads it from OpenCV Zoo into {cache_dir()}), "
        "or pass --detector-model PATH to a local copy."
    )


def fetch(url: str = DETECTOR_URL, dest: str | os.PathLike | None = None, sha256: str = DETECTOR_SHA256,
          force: bool = False) -> Path:
    """Download `url` to `dest` (default: the cache) and verify its sha256; the file appears only if it
    matches. An existing file with the right checksum is kept unless `force`."""
    dest = Path(dest) if dest else cached_detector_path()
    if dest.is_file() and not force and sha256_of(dest) == sha256:
        log.info("%s is already present and verified", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:  # the file appears only when complete and verified
        with open(tmp, "wb") as out:
            _download(url, out)
        _verify(tmp, sha256, url)
    log.info("saved %s (sha256 verified)", dest)
    return dest


def _download(url: str, out) -> None:
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
    except OSError as err:
        raise AssetError(f"download of {url} failed ({err}). Check the network, or download the file by "
                         "hand and pass --detector-model PATH.") from err


def _verify(path: Path, expected: str, url: str) -> None:
    actual = sha256_of(path)
    if actual != expected:
        raise AssetError(f"{url} has sha256 {actual}, expected {expected}; the file was not saved. "
                         "The upstream file may have changed: download it by hand, check it, and pass "
                         "--detector-model PATH.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m runtime.assets", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    fetch_p = sub.add_parser("fetch", help="download the YuNet detector into the cache and verify it")
    fetch_p.add_argument("--dest", help=f"target file (default: {cached_detector_path()})")
    fetch_p.add_argument("--force", action="store_true", help="download again even if a verified copy exists")
    sub.add_parser("path", help="print where the runtime looks for the detector")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "path":
        print(cached_detector_path())
        return 0
    try:
        print(fetch(dest=args.dest, force=args.force))
    except AssetError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
