"""`python -m training.widen`: a wider PFSR that computes exactly what a narrower trained one does.

    python -m training.widen --model pfsr_x4 --weights models/weights/pfsr_x4_camera_utk.safetensors \
        --config half --out runs/pfsr_x4_half_init.safetensors
    python -m training.train --model pfsr_x4 --config half --init-weights runs/pfsr_x4_half_init.safetensors ...

Training a wider network from scratch on this CPU costs sessions before it catches up with the narrow one; widened
this way it starts where the narrow one stands and only has to learn what the extra channels add. Every layer
keeps the narrow weights in its first channels; the new channels read the old ones through freshly initialised
weights, but nothing old reads a new channel yet (those weights are zero), so the output is unchanged, in
training mode (BatchNorm normalises per channel) and in eval mode. Gradients reach the zero weights at once (the
new channels are not zero), so the extra channels start to contribute from the first step (Net2Net's
function-preserving idea, with zero instead of copied fan-out). The equalized convolutions rescale their stored
weights by their new fan-in.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

import torch
import torch.nn as nn

from models import create_model
from models.pfsr import PFSR, _EqualizedConv

log = logging.getLogger("training.widen")


def widen(narrow: PFSR, wide: PFSR) -> PFSR:
    """`wide` (a freshly built PFSR of the same scale, at least as wide) given `narrow`'s function; returns it."""
    if narrow.config.scale != wide.config.scale or wide.config.width < narrow.config.width:
        raise ValueError(f"widen: {narrow.config} -> {wide.config}: same scale and a width at least as large")
    old_modules = dict(narrow.named_modules())
    with torch.no_grad():
        for name, module in wide.named_modules():
            old = old_modules[name]
            if isinstance(module, _EqualizedConv):
                _widen_weight(module.weight_orig, old.weight_orig * (old.scale / module.scale), transposed=False)
                _widen_vector(module.bias, old.bias)
            elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                _widen_weight(module.weight, old.weight, transposed=isinstance(module, nn.ConvTranspose2d))
                _widen_vector(module.bias, old.bias)
            elif isinstance(module, nn.BatchNorm2d):
                for key in ("weight", "bias", "running_mean", "running_var"):
                    _widen_vector(getattr(module, key), getattr(old, key))
                module.num_batches_tracked.copy_(old.num_batches_tracked)
    return wide


def _widen_weight(new: torch.Tensor, old: torch.Tensor, transposed: bool) -> None:
    """Old weights in the leading block; zero from new inputs to old outputs; new outputs keep their init."""
    if transposed:  # ConvTranspose2d: [in, out, k, k]
        new_in, old_in, old_out = new.shape[0], old.shape[0], old.shape[1]
        new[:old_in, :old_out] = old
        new[old_in:new_in, :old_out] = 0
    else:  # Conv2d: [out, in, k, k]
        old_out, old_in = old.shape[:2]
        new[:old_out, :old_in] = old
        new[:old_out, old_in:] = 0


def _widen_vector(new: torch.Tensor, old: torch.Tensor) -> None:
    new[:old.shape[0]] = old


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(prog="python -m training.widen", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, choices=("pfsr", "pfsr_x4"))
    p.add_argument("--weights", required=True, type=Path, help="the narrow model's safetensors")
    p.add_argument("--config", required=True, help="the wide model's config name (e.g. half)")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    from training.checkpoints import save_weights

    narrow = create_model(args.model, weights=args.weights)
    wide = widen(narrow, create_model(args.model, config=args.config))
    x = torch.rand(2, 3, narrow.config.input_size, narrow.config.input_size)
    with torch.no_grad():
        gap = float((wide.eval()(x) - narrow.eval()(x)).abs().max())
    if not math.isfinite(gap) or gap > 1e-4:
        log.error("the widened model differs from %s by %.2g: not written", args.weights, gap)
        return 1
    config = {"width": wide.config.width, "scale": wide.config.scale}
    save_weights(wide, args.out, metadata={"config": config, "model": args.model, "config_name": args.config,
                                            "widened_from": json.dumps({"weights": str(args.weights),
                                                                        "width": narrow.config.width})})
    log.info("%s: %s widened to width %d (largest output difference %.1e)", args.out, args.weights,
             wide.config.width, gap)
    return 0


if __name__ == "__main__":
    sys.exit(main())
