"""Shared behaviour of the architecture configs (frozen dataclasses stored in weights and manifests)."""
from __future__ import annotations

from dataclasses import asdict, fields


class ConfigDict:
    """Mixin for a config dataclass: plain-dict round trip; unknown keys are an error, not ignored."""

    model_label = "model"  # used in error messages, e.g. "DIC"
    retired_keys: dict = {}  # key -> the only value it ever had; dropped when read from older files

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        values = dict(values)
        for key, only_value in cls.retired_keys.items():
            if key in values and values.pop(key) != only_value:
                raise ValueError(f"{cls.model_label} config key {key!r} is retired and only ever had the value "
                                 f"{only_value!r}; these weights are not for this model")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown {cls.model_label} config keys {unknown}; known: {sorted(known)}")
        return cls(**values)
