"""What training writes: project weights files (safetensors) and resumable training checkpoints.

Weights: the model's tensors plus JSON metadata (config, iteration, val_psnr), loadable by
`models.create_model(name, weights=path)`. Checkpoints: model, optimizer, scheduler, RNG, iteration, as plain
tensors / primitives only, so they load with torch.load(weights_only=True). Both are published atomically.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn

from runtime.files import atomic_path

CHECKPOINT_FORMAT = 1


class ResumeError(RuntimeError):
    """A training checkpoint that cannot continue this run."""


def save_weights(
    model: nn.Module, path: str | os.PathLike, metadata: dict | None = None, half: bool = False
) -> Path:
    """Write the model's tensors as safetensors (atomically). `metadata` values are JSON-encoded."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _scheduler_state(scheduler) -> dict:
    state = dict(scheduler.state_dict())
    if isinstance(state.get("milestones"), Counter):
        state["milestones"] = dict(state["milestones"])  # Counter is not weights_only-loadable
    return state


def _cpu_tensors(module: nn.Module) -> dict:
    return {k: v.detach().cpu() for k, v in module.state_dict().items()}


def save_checkpoint(path: Path, *, model, optimizer, scheduler, sampler_state: torch.Tensor, iteration: int,
                    config: dict, model_name: str, best_score: float, history: list, scaler=None,
                    task_state: dict | None = None, ema=None) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "config": json.dumps(config, sort_keys=True),
        "iteration": int(iteration),
        "best_score": float(best_score),
        "model": _cpu_tensors(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": _scheduler_state(scheduler),
        "sampler_rng": sampler_state,
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(history),
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    if ema is not None:
        state["ema"] = _cpu_tensors(ema)
    if task_state:
        state["task"] = task_state  # e.g. DICGAN's discriminator and its optimizer
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, *, model_name: str, config: dict) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"resume checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ResumeError(f"{path} is not a training checkpoint of this project (format {CHECKPOINT_FORMAT})")
    if state["model_name"] != model_name:
        raise ResumeError(f"{path} was trained for model {state['model_name']!r}, not {model_name!r}")
    stored = json.loads(state["config"])
    if stored != config:
        diff = {k: (stored.get(k), config.get(k)) for k in sorted(set(stored) | set(config))
                if stored.get(k) != config.get(k)}
        raise ResumeError(
            f"{path} was trained with another config; differences (checkpoint, requested): {diff}. "
            "Resume with the same --config, or start a new run."
        )
    if "best_score" not in state:  # written before validation scores were task-defined
        state["best_score"] = state.pop("best_psnr")
    return state
