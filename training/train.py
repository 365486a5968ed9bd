"""Train a face SR model (DIC, PFSR) on the UTKFace crops.

    python -m training.train --model dic --config cpu_demo --max-minutes 60 --out runs/dic_cpu_demo
    python -m training.train --model pfsr --config half --iters 7000 --batch 16 --lr 1e-3 --out runs/pfsr_half
    python -m training.train --model dic --task landmarks --config cpu_demo --batch 16 --lr 1e-3 --out runs/dic_hg

CPU: uses `torch.set_num_threads(--threads)`. GPU (`--device cuda`, not exercised in this repository's
CI): `--amp` enables autocast (bf16 where supported, else fp16 with a GradScaler), the model and the
image batches use channels_last, and batches are copied from pinned memory with non_blocking=True.

`--ema DECAY` keeps an exponential moving average of the weights (as BasicSR's `ema_decay`); validation and
the weights files then use the average, the checkpoint keeps both.

Outputs in --out: `best.safetensors` (best validation score: Y-PSNR, or for `--task landmarks` the NME;
config, iteration and the validation metrics in the metadata),
`last.safetensors`, `checkpoint.pt` (resumable: model, optimizer, scheduler, RNG, iteration; plain
tensors / primitives only, loads with torch.load(weights_only=True)), `train.log`, `history.json`.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .augment import LR_ROUTES, TILED_ROUTES, RealFraming
from .batches import BatchMaker
from .checkpoints import ResumeError, load_checkpoint, save_checkpoint, save_weights
from .data import DataError, load_split
from .burst import burst_lr_set
from .degrade import LEVELS, TRAINING_MIX, degrade_lr_set
from .tasks import PIXEL_LOSSES, get_task
from .tasks.base import to_batch

VAL_DEGRADATION_SEED = 20261207  # the fixed degraded val set of --val-degradation
log = logging.getLogger("training")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dic")
    p.add_argument("--task", default="sr", choices=["sr", "landmarks"],
                   help="sr: the model's objective; landmarks (dic): pre-train the landmark hourglass alone")
    p.add_argument("--config", default="tiny",
                   help="named config (dic: default, small, tiny, cpu_demo; pfsr: default, half, quarter, tiny)")
    p.add_argument("--data", default=None, help="face data dir (default ../shared/data/faces-utk)")
    p.add_argument("--out", default="runs/train")
    p.add_argument("--cache", default="runs/cache", help="where decoded splits are cached as .npz ('' = off)")
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--milestones", default="0.5,0.75",
                   help="MultiStepLR milestones: fractions of --iters (<1) or iteration numbers")
    p.add_argument("--gamma", type=float, default=0.5)
    p.add_argument("--heatmap-weight", type=float, default=0.1, help="dic: landmark heatmap loss weight")
    p.add_argument("--heatmap-sigma", type=float, default=None,
                   help="dic: Gaussian sigma of the GT heatmaps in 32x32-grid cells (default 1.0; landmarks: 1.5)")
    p.add_argument("--heatmap-fg-weight", type=float, default=None,
                   help="dic: extra weight of heatmap cells > 0.1 in the heatmap MSE (default 0 = the paper's "
                        "plain MSE; landmarks: 10)")
    p.add_argument("--detach-attention-iters", type=int, default=0,
                   help="dic: stop the SR gradient at the attention maps for the first N iterations")
    p.add_argument("--hg-lr-scale", type=float, default=1.0, help="dic: learning rate of the hourglass x this")
    p.add_argument("--max-val-nme", type=float, default=None,
                   help="dic: a checkpoint whose val NME exceeds this is never 'best'")
    p.add_argument("--gan-weight", type=float, default=0.005, help="dicgan: adversarial loss weight")
    p.add_argument("--feature-weight", type=float, default=0.1, help="dicgan: LightCNN feature loss weight")
    p.add_argument("--feature-weights", default=None,
                   help="dicgan: pretrained LightCNN_feature.pth for the feature loss (off without it)")
    p.add_argument("--d-lr", type=float, default=1e-4, help="dicgan: discriminator learning rate")
    p.add_argument("--min-val-psnr", type=float, default=None,
                   help="dicgan: a checkpoint below this val Y-PSNR is never 'best'")
    p.add_argument("--final-stage-only", action="store_true",
                   help="pfsr, msfsr: train the whole model from the first iteration (fine-tuning trained weights)")
    p.add_argument("--boundary-weight", type=float, default=1.0, help="msfsr: boundary map loss weight")
    p.add_argument("--attention-weight", type=float, default=1.0, help="pfsr: facial attention loss weight")
    p.add_argument("--pixel-loss", default="l1", choices=PIXEL_LOSSES,
                   help="pfsr: per-pixel error of both loss terms (mse: squared, for a PSNR fine-tune)")
    p.add_argument("--ema", type=float, default=0.0,
                   help="decay of an exponential moving average of the weights, e.g. 0.999 (0 = off); "
                        "validation and the weights files use the average")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="GPU: bf16/fp16 autocast")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-workers", type=int, default=0,
                   help="processes that make batches ahead (cropping, recording, fusing bursts) while the "
                        "network trains; the same batches as without (default 0: made between steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="checkpoint.pt to continue exactly (weights, optimizer, schedule)")
    p.add_argument("--init-weights", default=None,
                   help="start from these weights (strict; new optimizer and schedule): warm start, not --resume")
    p.add_argument("--reschedule", action="store_true",
                   help="with --resume: replace the checkpoint's LR milestones by --milestones/--iters/--gamma "
                        "(e.g. a CPU run that is slower than planned); the run is then no longer an exact "
                        "continuation of the original schedule")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget; stops early, with final validation and checkpoints")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--val-limit", type=int, default=200, help="validate on the first N val images")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--save-every", type=int, default=250)
    p.add_argument("--landmark-weights", default=None, help="pretrained landmark hourglass (FB_HG_68_CelebA.pth)")
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--real-framing", action="store_true",
                   help="train on pairs framed and downscaled like faces cut from whole frames (training.augment)")
    p.add_argument("--framing-smallest", type=float, default=RealFraming.smallest_native,
                   help="--real-framing: smallest native face, as a fraction of the LR size (the 'smaller' and "
                        "'native' routes)")
    p.add_argument("--framing-routes", type=_routes, default=LR_ROUTES,
                   help=f"--real-framing: LR routes drawn from, comma-separated (default {','.join(LR_ROUTES)}; "
                        "'native' trains a tiled model on faces smaller than its input, with their surroundings)")
    p.add_argument("--camera", type=_camera_mix, default=None,
                   help="LR faces recorded by a simulated camera (training.degrade): 'mix' = "
                        f"{','.join(f'{n}:{w:g}' for n, w in TRAINING_MIX)}, one level for every face, "
                        "or shares of your own (e.g. clean:0.4,camera:0.5,heavy:0.1)")
    p.add_argument("--framing-scale-max", type=float, default=RealFraming.scale_range[1],
                   help="--real-framing: largest crop side / the aligned one (1.18; 1.45 adds looser, "
                        "FFHQ-like framing)")
    p.add_argument("--val-degradation", choices=sorted(LEVELS), default="clean",
                   help="validate (and pick 'best') on val LRs degraded at this level, fixed seed (default clean)")
    p.add_argument("--burst", type=int, default=0,
                   help="with --camera: film each face in a burst of 2..N frames (sub-pixel shake, the camera's "
                        "noise and codec per frame) fused as --fuse-frames fuses them (training.burst); the val "
                        "faces are fused bursts of N at --val-degradation")
    args = p.parse_args(argv)
    if args.burst and (args.burst < 2 or not args.camera):
        p.error("--burst N needs N >= 2 and --camera (a burst is filmed by a simulated camera)")
    if args.data_workers < 0:
        p.error(f"--data-workers must be 0 or more, got {args.data_workers}")
    landmarks = args.task == "landmarks"
    if args.heatmap_sigma is None:
        args.heatmap_sigma = 1.5 if landmarks else 1.0
    if args.heatmap_fg_weight is None:
        args.heatmap_fg_weight = 10.0 if landmarks else 0.0
    if args.resume and args.init_weights:
        p.error("--resume continues a run exactly; --init-weights starts a new one: give one of them")
    return args


def _routes(text: str) -> tuple[str, ...]:
    routes = tuple(r.strip() for r in text.split(",") if r.strip())
    unknown = [r for r in routes if r not in LR_ROUTES + TILED_ROUTES]
    if not routes or unknown:
        raise argparse.ArgumentTypeError(f"unknown LR route(s) {unknown or text!r}; "
                                         f"choose from {','.join(LR_ROUTES + TILED_ROUTES)}")
    return routes


def _camera_mix(text: str) -> tuple[tuple[str, float], ...]:
    """'mix', a level name, or 'level:share,...' -> ((level, share), ...) with shares summing to 1."""
    if text == "mix":
        return TRAINING_MIX
    try:
        pairs = [part.split(":") if ":" in part else (part, "1") for part in text.split(",") if part.strip()]
        mix = [(name.strip(), float(share)) for name, share in pairs]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--camera {text!r}: write 'mix', a level, or level:share,...") from None
    unknown = [name for name, _ in mix if name not in LEVELS]
    total = sum(share for _, share in mix)
    if not mix or unknown or total <= 0 or any(share < 0 for _, share in mix):
        raise argparse.ArgumentTypeError(f"--camera {text!r}: levels are {', '.join(LEVELS)} with shares >= 0")
    return tuple((name, share / total) for name, share in mix)


def make_milestones(spec: str, iters: int) -> list[int]:
    out = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        value = float(part)
        out.append(int(round(value * iters)) if value < 1 else int(value))
    return sorted(set(out))


# --- main loop ------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a training run updates; saved whole in the checkpoint."""

    task: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator
    config: dict
    device: torch.device
    amp_dtype: torch.dtype | None = None
    scaler: object = None
    iteration: int = 0
    best_score: float = -math.inf
    history: list = field(default_factory=list)
    ema: torch.nn.Module | None = None  # --ema: the averaged copy of `model`
    batches: BatchMaker | None = None  # draws the training batches from `generator` (and makes them)

    @property
    def weights_model(self) -> torch.nn.Module:
        """The network validated and written to the weights files."""
        return self.model if self.ema is None else self.ema


def _device(args) -> torch.device:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    return device


def _mixed_precision(args, device: torch.device):
    """(autocast dtype or None, GradScaler or None) for --amp."""
    if not args.amp:
        return None, None
    if device.type != "cuda":
        log.warning("--amp is for --device cuda; ignored on CPU")
        return None, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return dtype, torch.amp.GradScaler("cuda") if dtype == torch.float16 else None


def _new_run(args) -> Run:
    device = _device(args)
    torch.manual_seed(args.seed)
    task = get_task(args.model, args)
    if args.real_framing or args.camera:
        task.augment = RealFraming(smallest_native=args.framing_smallest, routes=args.framing_routes,
                                   clean_share=RealFraming.clean_share if args.real_framing else 1.0,
                                   scale_range=(RealFraming.scale_range[0], args.framing_scale_max),
                                   camera=args.camera, burst=args.burst)
    config = task.resolve_config(args.config)
    model = task.build_model(config).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    _load_initial_weights(model, args)
    optimizer = torch.optim.Adam(task.param_groups(model, args.lr), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=make_milestones(args.milestones, args.iters),
                                                     gamma=args.gamma)
    amp_dtype, scaler = _mixed_precision(args, device)
    run = Run(task, model, optimizer, scheduler, torch.Generator().manual_seed(args.seed), config.to_dict(), device,
              amp_dtype, scaler)
    if args.ema > 0:
        run.ema = copy.deepcopy(model).eval().requires_grad_(False)
    return run


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for averaged, current in zip(ema.parameters(), model.parameters()):
        averaged.lerp_(current, 1.0 - decay)
    for averaged, current in zip(ema.buffers(), model.buffers()):
        averaged.copy_(current)  # running statistics, counters: follow the trained model


def _load_initial_weights(model: torch.nn.Module, args) -> None:
    """--init-weights (the whole network, or the hourglass for --task landmarks), then --landmark-weights."""
    from models import load_landmark_weights, load_weights

    if args.init_weights:
        (load_landmark_weights if args.task == "landmarks" else load_weights)(model, args.init_weights)
        log.info("initialised from %s", args.init_weights)
    if args.landmark_weights:
        if args.task == "landmarks":
            raise SystemExit("--landmark-weights is for joint training; with --task landmarks use --init-weights")
        load_landmark_weights(model, args.landmark_weights)
        log.info("loaded landmark weights %s", args.landmark_weights)


def _resume(run: Run, args) -> None:
    state = load_checkpoint(args.resume, model_name=args.model, config=run.config)
    run.model.load_state_dict(state["model"])
    if run.ema is not None:  # a checkpoint written without --ema starts the average at its weights
        run.ema.load_state_dict(state.get("ema", state["model"]))
    run.task.load_state_dict(state.get("task", {}))
    run.optimizer.load_state_dict(state["optimizer"])
    sched_state = dict(state["scheduler"])
    sched_state["milestones"] = Counter(sched_state["milestones"])
    run.scheduler.load_state_dict(sched_state)
    run.generator.set_state(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    if run.scaler is not None and "scaler" in state:
        run.scaler.load_state_dict(state["scaler"])
    run.iteration, run.best_score = state["iteration"], state["best_score"]
    if args.reschedule:
        _reschedule(run, args)
    run.history = json.loads(state["history"])
    log.info("resumed from %s at iteration %d (best val score %.4f)", args.resume, run.iteration, run.best_score)


def _reschedule(run: Run, args) -> None:
    milestones = make_milestones(args.milestones, args.iters)
    run.scheduler.milestones = Counter(milestones)
    run.scheduler.gamma = args.gamma
    decays = sum(1 for m in milestones if m <= run.iteration)
    for group, base in zip(run.optimizer.param_groups, run.scheduler.base_lrs):
        group["lr"] = base * args.gamma**decays
    run.scheduler._last_lr = [g["lr"] for g in run.optimizer.param_groups]
    log.info("rescheduled: milestones %s gamma %g, lr now %.2e", milestones, args.gamma,
             run.optimizer.param_groups[0]["lr"])


def _save_all(run: Run, args, out: Path, is_best: bool, metrics: dict | None) -> None:
    meta = {"config": run.config, "model": args.model, "task": args.task, "config_name": args.config,
            "iteration": run.iteration, **{f"val_{k}": v for k, v in (metrics or {}).items()}}
    augment = run.task.augment
    if augment is not None and augment.clean_share < 1:  # --real-framing: the runtime may route faces this small
        meta["min_input_ratio"] = augment.smallest_native
    if augment is not None and augment.camera is not None:
        meta["degradation"] = json.dumps({"camera": dict(augment.camera), "val": args.val_degradation,
                                          **({"burst": augment.burst} if augment.burst else {})})
    save_weights(run.weights_model, out / "last.safetensors", metadata=meta)
    if is_best:
        save_weights(run.weights_model, out / "best.safetensors", metadata=meta)
    sampler = run.batches.sampler_state() if run.batches is not None else run.generator.get_state()
    save_checkpoint(out / "checkpoint.pt", model=run.model, optimizer=run.optimizer, scheduler=run.scheduler,
                    sampler_state=sampler, iteration=run.iteration, config=run.config, model_name=args.model,
                    best_score=run.best_score, history=run.history, scaler=run.scaler,
                    task_state=run.task.state_dict(), ema=run.ema)


def _validate_and_save(run: Run, args, out: Path, val_split, start_wall: float) -> None:
    t = time.time()
    metrics = run.task.validate(run.weights_model, val_split, run.device)
    # A progressive model is only a candidate once its final step is fully blended in; the task may also
    # rule a checkpoint out (e.g. DIC whose landmarks got lost).
    score = run.task.score(metrics) if run.task.final_model_ready else None
    is_best = score is not None and score > run.best_score
    run.best_score = max(run.best_score, score) if score is not None else run.best_score
    run.history.append({"iteration": run.iteration, **{f"val_{k}": v for k, v in metrics.items()},
                        "elapsed_s": time.time() - start_wall})
    shown = "  ".join(f"val {k} {v:.4f}" for k, v in metrics.items())
    log.info("iter %d  %s  score %s (best %.4f)  [%.1fs]", run.iteration, shown,
             "-" if score is None else f"{score:.4f}", run.best_score, time.time() - t)
    _save_all(run, args, out, is_best, metrics)
    (out / "history.json").write_text(json.dumps(run.history, indent=1))


def _train_step(run: Run, args) -> tuple[float, dict, int]:
    """One optimiser step on a random (flipped) batch; returns (loss, loss parts, faces)."""
    run.task.set_iteration(run.iteration, args.iters)
    on_gpu = run.device.type == "cuda"
    batch = to_batch(*run.batches.next(), device=run.device, pin_memory=on_gpu, channels_last=on_gpu)
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        loss, parts = run.task.loss(run.model, batch)
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        run.optimizer.step()
    run.scheduler.step()
    if run.ema is not None:
        _update_ema(run.ema, run.model, args.ema)
    run.iteration += 1
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"loss is {loss.item()} at iteration {run.iteration}")
    return loss.item(), parts, len(batch)


def _log_window(run: Run, args, window: list[dict], faces: int, seconds: float, start_wall: float) -> None:
    means = ", ".join(f"{k} {np.mean([w[k] for w in window]):.5f}" for k in window[0])
    per_iter = seconds / len(window)
    log.info("iter %d/%d  %s  %s  lr %.2e  %.2f faces/s  %.2f s/it  elapsed %.1f min  eta %.0f min",
             run.iteration, args.iters, means, run.task.status(), run.scheduler.get_last_lr()[0],
             faces / seconds, per_iter, (time.time() - start_wall) / 60,
             (args.iters - run.iteration) * per_iter / 60)  # at the latest window's speed, without validation


def _train_loop(run: Run, args, out: Path, val_split, start_wall: float) -> dict:
    """Steps until --iters or --max-minutes, validating and saving on the way and at the end."""
    deadline = start_wall + 60 * args.max_minutes if args.max_minutes else None
    run.model.train()
    window_t, window_faces, window = time.time(), 0, []
    stopped_by_time = False
    while run.iteration < args.iters:
        if deadline is not None and time.time() >= deadline:
            stopped_by_time = True
            log.info("wall-clock budget of %.1f min reached at iteration %d", args.max_minutes, run.iteration)
            break
        loss, parts, faces = _train_step(run, args)
        window_faces += faces
        window.append({"loss": loss, **parts})
        if run.iteration % args.log_every == 0:
            _log_window(run, args, window, window_faces, time.time() - window_t, start_wall)
            window_t, window_faces, window = time.time(), 0, []
        if run.iteration % args.val_every == 0:
            _validate_and_save(run, args, out, val_split, start_wall)
            window_t = time.time()
        elif run.iteration % args.save_every == 0:
            _save_all(run, args, out, False, None)
    if not run.history or run.history[-1]["iteration"] != run.iteration:
        _validate_and_save(run, args, out, val_split, start_wall)
    return {"iterations": run.iteration, "best_val_score": run.best_score,
            "wall_minutes": (time.time() - start_wall) / 60, "stopped_by_time": stopped_by_time, "out": str(out)}


def train(args: argparse.Namespace) -> dict:
    start_wall = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = _new_run(args)
    if args.resume:
        _resume(run, args)
    cache = args.cache or None
    train_split = load_split("train", args.data, cache_dir=cache, lr_size=run.task.lr_size)
    val_split = load_split("val", args.data, cache_dir=cache, lr_size=run.task.lr_size).subset(args.val_limit)
    if args.burst >= 2:
        val_split = replace(val_split, lr=burst_lr_set(val_split.hr, run.task.lr_size, args.val_degradation,
                                                       args.burst, VAL_DEGRADATION_SEED))
    elif args.val_degradation != "clean":
        val_split = replace(val_split, lr=degrade_lr_set(val_split.hr, run.task.lr_size, args.val_degradation,
                                                         VAL_DEGRADATION_SEED))
    log.info("model %s config %s (%s), %d params; train %d faces (%d undecodable skipped), val %d",
             args.model, args.config, run.config, sum(p.numel() for p in run.model.parameters()),
             len(train_split), train_split.skipped, len(val_split))
    log.info("Adam lr %g, MultiStepLR milestones %s gamma %g, batch %d, iters %d, device %s, threads %d, amp %s, "
             "data workers %d", args.lr, sorted(run.scheduler.milestones), args.gamma, args.batch, args.iters,
             run.device, torch.get_num_threads(), run.amp_dtype, args.data_workers)

    run.batches = BatchMaker(train_split, run.generator, args.batch, flip=not args.no_flip,
                             augment=run.task.augment, workers=args.data_workers)
    with run.batches:
        summary = _train_loop(run, args, out, val_split, start_wall)
    log.info("done: %s", summary)
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout),
                                  logging.FileHandler(Path(args.out) / "train.log")])
    log.info("command: python -m training.train %s", " ".join(sys.argv[1:] if argv is None else argv))
    try:
        train(args)
    except (DataError, ResumeError) as err:
        log.error("error: %s", err)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
