"""TensorRT's legacy (implicit-quantization) calibration cache, for TensorRT <= 10 and DLA.

Text format, as IInt8EntropyCalibrator2 writes it::

    TRT-<version>-EntropyCalibration2
    <tensor name>: <8 hex digits>

The hex is the big-endian IEEE-754 float32 scale, scale = amax / 127. TensorRT's file says nothing about
the model, so a JSON sidecar `<cache>.json` records the model and calibration-set hashes; a cache whose
sidecar does not match is stale (StaleCacheError: recalibrate).
"""
from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path

from runtime.files import write_bytes_atomic, write_json_atomic

from . import CalibrationError, StaleCacheError

HEADER_RE = re.compile(r"^TRT-(\d+)-(EntropyCalibration2|EntropyCalibration|MinMaxCalibration|LegacyCalibration)$")
ALGORITHM = "EntropyCalibration2"


def scale_from_amax(amax: float) -> float:
    return float(amax) / 127.0


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_to_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def format_cache(scales: dict[str, float], trt_version: int | str) -> str:
    """Cache text for {tensor name: scale}; trt_version as TensorRT writes it (e.g. 100300 or 8601)."""
    if not str(trt_version).isdigit():
        raise CalibrationError(f"TensorRT version {trt_version!r}: expected the integer form, e.g. 8601 or 100300")
    lines = [f"TRT-{trt_version}-{ALGORITHM}"]
    for name, scale in scales.items():
        if not (math.isfinite(scale) and scale > 0):
            raise CalibrationError(f"tensor {name!r}: scale {scale} is not a finite positive number")
        if ":" in name or "\n" in name:
            raise CalibrationError(f"tensor name {name!r} cannot be stored in a TensorRT cache (':' or newline)")
        lines.append(f"{name}: {scale_to_hex(scale)}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str | bytes, source: str = "cache") -> tuple[str, dict[str, float]]:
    """(header, {tensor name: scale}) from cache text; CalibrationError when corrupted."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as err:
            raise CalibrationError(f"{source}: not a TensorRT calibration cache (binary data); delete it to "
                                   "recalibrate") from err
    lines = text.splitlines()
    if not lines or not HEADER_RE.match(lines[0].strip()):
        first = lines[0][:60] if lines else "(empty file)"
        raise CalibrationError(f"{source}: first line {first!r} is not a TensorRT cache header, expected "
                               f"'TRT-<version>-{ALGORITHM}'; delete the file to recalibrate")
    scales = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(": ")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{8}", value.strip()):
            raise CalibrationError(f"{source}, line {number}: {line[:80]!r} is not '<tensor>: <8 hex digits>'; "
                                   "the cache is corrupted, delete it to recalibrate")
        scale = hex_to_scale(value.strip())
        if not (math.isfinite(scale) and scale >= 0):
            raise CalibrationError(f"{source}, line {number}: scale {scale} of {name!r} is invalid; delete the "
                                   "cache to recalibrate")
        scales[name] = scale
    if not scales:
        raise CalibrationError(f"{source}: header only, no tensor scales; delete it to recalibrate")
    return lines[0].strip(), scales


def write_cache(path: str | Path, data: str | bytes, model_sha256: str, calibration_sha256: str) -> Path:
    """Write cache text/bytes (validated) and its sidecar atomically."""
    path = Path(path)
    raw = data.encode("ascii") if isinstance(data, str) else bytes(data)
    parse_cache(raw, str(path))
    write_bytes_atomic(path, raw)
    write_json_atomic(sidecar(path), {"model_sha256": model_sha256, "calibration_sha256": calibration_sha256})
    return path


def read_cache(path: str | Path, model_sha256: str, calibration_sha256: str) -> bytes | None:
    """The cache bytes if present, valid and made for this model and calibration set; None if absent.

    Raises StaleCacheError when it belongs to another model/set, CalibrationError when corrupted.
    """
    path = Path(path)
    if not path.is_file():
        return None
    raw = path.read_bytes()
    parse_cache(raw, str(path))
    side = sidecar(path)
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError) as err:
        raise StaleCacheError(f"{path}: no readable sidecar {side.name}, so it cannot be matched to this model; "
                              "recalibrating") from err
    if meta.get("model_sha256") != model_sha256 or meta.get("calibration_sha256") != calibration_sha256:
        raise StaleCacheError(f"{path} was made for another model or calibration set (model "
                              f"{str(meta.get('model_sha256'))[:12]} vs {model_sha256[:12]}, set "
                              f"{str(meta.get('calibration_sha256'))[:12]} vs {calibration_sha256[:12]}); recalibrating")
    return raw


def sidecar(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")
