"""Reading and writing network weights.

Formats understood by `read_state_dict`:
  * `.safetensors` — the project's own format (optionally with a JSON "config" in its metadata).
  * `.pth` / `.pt` — upstream checkpoints, read with `torch.load(weights_only=True)` only:
      - DIC training saves   {"state_dict": ..., "optimizer": ..., ...}
      - DICGAN saves         {"netG": ..., ...}
      - PFSR saves           {"model_state_dict": ..., "step": ..., "alpha": ..., "iteration": ...}
      - raw state dicts, e.g. the landmark net `FB_HG_68_CelebA.pth` (HG weights without "HG.").
A checkpoint that needs full unpickling (arbitrary Python objects) is refused: unpickling runs code.
"""
from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["WeightsError", "read_state_dict", "load_into", "read_metadata"]

WRAPPER_KEYS = ("state_dict", "netG", "model_state_dict", "model", "params")


class WeightsError(ValueError):
    """A weight file that cannot be used: missing, corrupt, unsafe, or not matching the network."""


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise WeightsError(f"{path}: not a readable safetensors file ({err}). Is it truncated or corrupt?") from err


def _read_torch_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch words it "Unsupported global: GLOBAL x.y" or, for blocked modules, "unsupported GLOBAL x.y whose
        # module x is blocked"; either way the file is intact and asks for code to run.
        unsafe = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(err))
        if unsafe is None:  # not an unsafe class: the bytes themselves are broken
            raise WeightsError(f"{path}: cannot read PyTorch checkpoint. Is it truncated or corrupt?") from err
        raise WeightsError(
            f"{path}: refused — this checkpoint needs full unpickling of {unsafe.group(1)}, and unpickling runs "
            "whatever code the file names; this toolkit never does that. Use a checkpoint that holds tensors only "
            "(a state dict saved by its publisher, or a safetensors file)."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise WeightsError(f"{path}: cannot read PyTorch checkpoint ({err}). Is it truncated or corrupt?") from err
    return _unwrap_checkpoint(obj, path)


def _unwrap_checkpoint(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        else:
            raise WeightsError(
                f"{path}: checkpoint dict has no weights under any of {list(WRAPPER_KEYS)}; "
                f"top-level keys: {sorted(map(str, obj))[:10]}"
            )
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    # Saved from nn.DataParallel: drop the common "module." prefix.
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors / .pth / .pt, unwrapping upstream checkpoint dicts."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix in (".pth", ".pt", ".ckpt"):
        return _read_torch_checkpoint(path)
    raise WeightsError(f"{path}: unknown weights format {suffix!r}; expected .safetensors, .pth or .pt")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata stored in a safetensors header ({} for other formats)."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: cannot read safetensors header ({err}). Is it truncated or corrupt?") from err


def describe_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """Human-readable list of missing / unexpected / wrong-shape keys ('' when they match)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if state[k].shape != expected[k].shape
    ]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
        if items:
            shown = ", ".join(items[:8]) + (f", ... (+{len(items) - 8} more)" if len(items) > 8 else "")
            lines.append(f"{len(items)} {title}: {shown}")
    return "; ".join(lines)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "weights") -> None:
    """Strict load: every key present, nothing extra, every shape equal; else WeightsError."""
    problem = describe_mismatch(model, state)
    if problem:
        raise WeightsError(f"{source} do not match {type(model).__name__}: {problem}")
    reference = model.state_dict()
    model.load_state_dict({k: v.to(reference[k].dtype) for k, v in state.items()}, strict=True)
