"""Provenance fields of a manifest (package versions, time); the manifest itself is `runtime.contract`."""
from __future__ import annotations

import platform
from datetime import datetime, timezone
from importlib import metadata


def package_versions(names=("fsr-edge", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "numpy")) -> dict:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
