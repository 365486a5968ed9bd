"""File helpers every package shares: atomic publishing and checksums.

A file is written under a temporary name in its final folder and renamed into place only when it is
complete, so readers never see half a file and a failed write never replaces a good one. Published
files get normal permissions (0666 minus the umask), not mkstemp's 0600.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp_path: str | os.PathLike, final_path: str | os.PathLike) -> Path:
    """Rename a finished temporary file into place (atomic on one file system), with umask permissions."""
    os.chmod(tmp_path, 0o666 & ~_umask())
    os.replace(tmp_path, final_path)
    return Path(final_path)


@contextlib.contextmanager
def atomic_path(final_path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final_path`; publish it there if the block succeeds, else delete it.

    `suffix` (default: the final file's) matters for writers that pick the format from the name.
    """
    final_path = Path(final_path)
    suffix = final_path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=suffix, dir=final_path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish(tmp_path, final_path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    return write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode())


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
