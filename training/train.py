"""Train a face SR model (DIC, PFSR) on the UTKFace crops.

    python -m training.train --model dic --config cpu_demo --max-minutes 60 --out runs/dic_cpu_demo
    python -m training.train --model pfsr --config half --iters 7000 --batch 16 --lr 1e-3 --out runs/pfsr_half

CPU: uses `torch.set_num_threads(--threads)`. GPU (`--device cuda`, not exercised in this repository's
CI): `--amp` enables autocast (bf16 where supported, else fp16 with a GradScaler), the model and the
image batches use channels_last, and batches are copied from pinned memory with non_blocking=True.

Outputs in --out: `best.safetensors` (best val Y-PSNR; config, iteration, val_psnr in the metadata),
`last.safetensors`, `checkpoint.pt` (resumable: model, optimizer, scheduler, RNG, iteration; plain
tensors / primitives only, loads with torch.load(weights_only=True)), `train.log`, `history.json`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from models.weights import save_weights

from .data import DataError, load_split
from .tasks import get_task, sample_batch

log = logging.getLogger("training")

CHECKPOINT_FORMAT = 1


class ResumeError(RuntimeError):
    """A training checkpoint that cannot continue this run."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="dic")
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
    p.add_argument("--attention-weight", type=float, default=1.0, help="pfsr: facial attention loss weight")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="GPU: bf16/fp16 autocast")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", default=None, help="checkpoint.pt to continue from")
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
    return p.parse_args(argv)


def make_milestones(spec: str, iters: int) -> list[int]:
    out = []
    for part in filter(None, (s.strip() for s in spec.split(","))):
        value = float(part)
        out.append(int(round(value * iters)) if value < 1 else int(value))
    return sorted(set(out))


# --- checkpoint -----------------------------------------------------------------------------------


def _scheduler_state(scheduler) -> dict:
    state = dict(scheduler.state_dict())
    if isinstance(state.get("milestones"), Counter):
        state["milestones"] = dict(state["milestones"])  # Counter is not weights_only-loadable
    return state


def save_checkpoint(path: Path, *, model, optimizer, scheduler, generator, iteration: int, config: dict,
                    model_name: str, best_psnr: float, history: list, scaler=None) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "model_name": model_name,
        "config": json.dumps(config, sort_keys=True),
        "iteration": int(iteration),
        "best_psnr": float(best_psnr),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": _scheduler_state(scheduler),
        "sampler_rng": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": json.dumps(history),
    }
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


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
    return state


# --- validation -----------------------------------------------------------------------------------


@torch.no_grad()
def validate(task, model, split, device, batch_size: int = 25) -> float:
    """Mean Y-PSNR (official DIC metric) of the last step on `split`."""
    from .metrics import psnr, rgb_to_y, to_uint8, CROP_BORDER

    was_training = model.training
    model.eval()
    scores = []
    c = CROP_BORDER
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        batch = sample_batch(split, idx, device=device)
        sr_steps, _ = task.predict(model, batch.lr)
        sr = to_uint8(sr_steps[-1])
        for i, k in enumerate(idx):
            scores.append(psnr(rgb_to_y(sr[i])[c:-c, c:-c], rgb_to_y(split.hr[k])[c:-c, c:-c]))
    model.train(was_training)
    return float(np.mean(scores))


# --- main loop ------------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict:
    start_wall = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    task = get_task(args.model, args)
    config = task.resolve_config(args.config)
    config_dict = config.to_dict()
    model = task.build_model(config).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.landmark_weights:
        from models import load_landmark_weights

        load_landmark_weights(model, args.landmark_weights)
        log.info("loaded landmark weights %s", args.landmark_weights)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    milestones = make_milestones(args.milestones, args.iters)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=args.gamma)
    amp_dtype = None
    scaler = None
    if args.amp:
        if device.type != "cuda":
            log.warning("--amp is for --device cuda; ignored on CPU")
        else:
            amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            if amp_dtype == torch.float16:
                scaler = torch.amp.GradScaler("cuda")
    generator = torch.Generator().manual_seed(args.seed)
    iteration, best_psnr, history = 0, -math.inf, []

    if args.resume:
        state = load_checkpoint(args.resume, model_name=args.model, config=config_dict)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sched_state = dict(state["scheduler"])
        sched_state["milestones"] = Counter(sched_state["milestones"])
        scheduler.load_state_dict(sched_state)
        generator.set_state(state["sampler_rng"])
        torch.set_rng_state(state["torch_rng"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        iteration, best_psnr = state["iteration"], state["best_psnr"]
        if args.reschedule:
            scheduler.milestones = Counter(milestones)
            scheduler.gamma = args.gamma
            decays = sum(1 for m in milestones if m <= iteration)
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * args.gamma**decays
            scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
            log.info("rescheduled: milestones %s gamma %g, lr now %.2e", milestones, args.gamma,
                     optimizer.param_groups[0]["lr"])
        history = json.loads(state["history"])
        log.info("resumed from %s at iteration %d (best val %.3f dB)", args.resume, iteration, best_psnr)

    cache = args.cache or None
    train_split = load_split("train", args.data, cache_dir=cache)
    val_split = load_split("val", args.data, cache_dir=cache).subset(args.val_limit)
    log.info("model %s config %s (%s), %d params; train %d faces (%d undecodable skipped), val %d",
             args.model, args.config, config_dict, sum(p.numel() for p in model.parameters()),
             len(train_split), train_split.skipped, len(val_split))
    log.info("Adam lr %g, MultiStepLR milestones %s gamma %g, batch %d, iters %d, device %s, threads %d, amp %s",
             args.lr, milestones, args.gamma, args.batch, args.iters, device, torch.get_num_threads(), amp_dtype)

    meta_base = {"config": config_dict, "model": args.model, "config_name": args.config}

    def save_all(tag_best: bool, val_psnr: float | None):
        meta = {**meta_base, "iteration": iteration, "val_psnr": val_psnr}
        save_weights(model, out / "last.safetensors", metadata=meta)
        if tag_best:
            save_weights(model, out / "best.safetensors", metadata=meta)
        save_checkpoint(out / "checkpoint.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                        generator=generator, iteration=iteration, config=config_dict, model_name=args.model,
                        best_psnr=best_psnr, history=history, scaler=scaler)

    def run_validation():
        nonlocal best_psnr
        t = time.time()
        val = validate(task, model, val_split, device)
        # A progressive model is only a candidate once its final step is fully blended in.
        is_best = task.final_model_ready and val > best_psnr
        best_psnr = max(best_psnr, val) if task.final_model_ready else best_psnr
        history.append({"iteration": iteration, "val_psnr": val, "elapsed_s": time.time() - start_wall})
        log.info("iter %d  val Y-PSNR %.3f dB (best %.3f)  [%.1fs]", iteration, val, best_psnr, time.time() - t)
        save_all(is_best, val)
        (out / "history.json").write_text(json.dumps(history, indent=1))

    deadline = start_wall + 60 * args.max_minutes if args.max_minutes else None
    model.train()
    window_t, window_n, window_loss = time.time(), 0, []
    stopped_by_time = False
    while iteration < args.iters:
        if deadline is not None and time.time() >= deadline:
            stopped_by_time = True
            log.info("wall-clock budget of %.1f min reached at iteration %d", args.max_minutes, iteration)
            break
        task.set_iteration(iteration, args.iters)
        idx = torch.randint(len(train_split), (args.batch,), generator=generator).numpy()
        flips = None if args.no_flip else (torch.rand(args.batch, generator=generator) < 0.5).numpy()
        batch = sample_batch(train_split, idx, flips, device=device, pin_memory=device.type == "cuda",
                             channels_last=channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss, parts = task.loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        iteration += 1
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at iteration {iteration}")
        window_n += len(batch)
        window_loss.append({"loss": loss.item(), **parts})
        if iteration % args.log_every == 0:
            dt = time.time() - window_t
            means = ", ".join(f"{k} {np.mean([w[k] for w in window_loss]):.5f}" for k in window_loss[0])
            log.info("iter %d/%d  %s  %s  lr %.2e  %.2f faces/s  %.2f s/it  elapsed %.1f min",
                     iteration, args.iters, means, task.status(), scheduler.get_last_lr()[0],
                     window_n / dt, dt / len(window_loss), (time.time() - start_wall) / 60)
            window_t, window_n, window_loss = time.time(), 0, []
        if iteration % args.val_every == 0:
            run_validation()
            window_t = time.time()
        elif iteration % args.save_every == 0:
            save_all(False, None)
    if not history or history[-1]["iteration"] != iteration:
        run_validation()
    summary = {"iterations": iteration, "best_val_psnr": best_psnr, "wall_minutes": (time.time() - start_wall) / 60,
               "stopped_by_time": stopped_by_time, "out": str(out)}
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
