"""The JSON manifest written beside every artifact: what the runtime reads instead of guessing."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

FORMAT = "fsr-edge-manifest/1"


def package_versions(names=("fsr-edge", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "numpy")) -> dict:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def io_spec(name: str, shape: list, value_range=None, dtype: str = "float32") -> dict:
    spec = {"name": name, "dtype": dtype, "shape": shape}
    if value_range is not None:
        spec["range"] = list(value_range)
    return spec


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def publish_file(tmp_path: str | os.PathLike, final_path: str | os.PathLike) -> None:
    """Rename a finished temporary file into place (atomic), with normal (umask) permissions."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    os.replace(tmp_path, final_path)


def write_json_atomic(path: str | os.PathLike, data: dict) -> Path:
    """Write JSON via a temporary file in the same folder and rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        publish_file(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_manifest(path: str | os.PathLike) -> dict:
    data = json.loads(Path(path).read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an fsr-edge manifest (format {data.get('format')!r}, expected {FORMAT!r})")
    return data
