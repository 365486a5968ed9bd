"""Training tasks: what a model-specific part of training needs, so the loop in `train.py` stays generic.

A task knows how to build its model from a config, turn a batch of uint8 arrays into tensors, compute
the loss, and produce the SR image used for validation. Every task also has
`set_iteration(iteration, total)` (a schedule hook, e.g. PFSR's progressive steps) and
`final_model_ready` (whether validation scores may select the best checkpoint yet). One module per model
family (as BasicSR keeps one model per file); adding a model adds a module and a row to TASKS
(docs/adding-a-model.md).
"""
from __future__ import annotations

from .base import Batch, sample_batch, weighted_heatmap_mse
from .dic import EXTRA_DIC_CONFIGS, DICGANTask, DICLandmarkTask, DICTask
from .msfsr import MSFSRTask
from .panini import PaniniTask
from .pfsr import PIXEL_LOSSES, PFSRTask, PFSRX4Task, ProgressiveSchedule, attention_map

__all__ = ["EXTRA_DIC_CONFIGS", "PIXEL_LOSSES", "Batch", "DICTask", "DICGANTask", "DICLandmarkTask", "MSFSRTask",
           "PFSRTask", "PFSRX4Task", "PaniniTask", "ProgressiveSchedule", "TASKS", "get_task", "sample_batch",
           "attention_map", "weighted_heatmap_mse"]

# (model, task) -> task class; "sr" is the model's own objective.
TASKS = {("dic", "sr"): DICTask, ("dic", "landmarks"): DICLandmarkTask, ("dicgan", "sr"): DICGANTask,
         ("pfsr", "sr"): PFSRTask,
         ("pfsr_x4", "sr"): PFSRX4Task, ("msfsr", "sr"): MSFSRTask, ("panini", "sr"): PaniniTask}


def get_task(name: str, args=None, task: str = "sr", **kwargs):
    """The training task for a model: from parsed CLI `args` (task-specific options), else `kwargs`."""
    task = getattr(args, "task", task) if args is not None else task
    if (name, task) not in TASKS:
        available = ", ".join(f"{m} --task {t}" for m, t in TASKS)
        raise ValueError(f"no training task {task!r} for model {name!r}; available: {available}")
    cls = TASKS[(name, task)]
    return cls.from_args(args) if args is not None else cls(**kwargs)
