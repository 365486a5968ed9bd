"""One error hierarchy for the runtime. Every message says what was received, what was expected, and
how to fix it, so the CLI can print it as-is and exit."""
from __future__ import annotations


class RuntimeToolkitError(RuntimeError):
    """Base class of every error the runtime raises on purpose."""


class SourceError(RuntimeToolkitError):
    """A source string that cannot be parsed, or a source that cannot be opened or read."""


class SinkError(RuntimeToolkitError):
    """An output (video file, image folder, window, crop folder) that cannot be opened or written."""


class BackendError(RuntimeToolkitError):
    """An inference backend that is unavailable, misused, or fails to run."""


class ModelArtifactError(RuntimeToolkitError):
    """A model artifact (manifest, ONNX, engine) that is missing, corrupt or inconsistent."""


class AssetError(RuntimeToolkitError):
    """A helper file (the face detector model) that is missing or does not match its checksum."""
