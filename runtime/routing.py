"""Scale routing: which model, if any, enhances a face, so that no face comes out worse than recorded.

A face recorded at `native` px (the side of its framing square) and shown at `display` px:
- when it is not shown larger than recorded (display <= native), the source pixels are the best there is:
  it is not enhanced;
- otherwise it goes to the model whose input side fits its native size best (smallest |log(native/input)|),
  and only if the native size is at most that model's crossover: the largest native size at which the
  model still beats plain interpolation (measured by `python -m benchmarks.crossover`; see
  `constants.CROSSOVER_RATIO`). Above it the face is interpolated instead.
`force` (the CLI's --enhance-all) enhances every face with its best-fitting model.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .constants import CROSSOVER_RATIO


@dataclass(frozen=True)
class ModelFit:
    """What routing needs to know about one model: its input and output sides and its crossover."""

    input_px: int
    output_px: int
    crossover_px: float

    @classmethod
    def for_sides(cls, input_px: int, output_px: int, ratio: float = CROSSOVER_RATIO) -> "ModelFit":
        return cls(input_px, output_px, ratio * input_px)


@dataclass(frozen=True)
class Route:
    """The decision for one face: `model` is an index into the models, or None (keep the source pixels)."""

    model: int | None
    reason: str


def best_fit(native_px: float, models: list[ModelFit]) -> int:
    """Index of the model whose input side is closest to the native size on a log scale."""
    return min(range(len(models)), key=lambda i: abs(math.log(max(native_px, 1.0) / models[i].input_px)))


def route(native_px: float, display_px: float, models: list[ModelFit], force: bool = False) -> Route:
    index = best_fit(native_px, models)
    if force:
        return Route(index, "forced")
    if display_px <= native_px:
        return Route(None, "shown at or below its recorded size")
    if native_px > models[index].crossover_px:
        return Route(None, f"{native_px:.0f} px is above the model's crossover ({models[index].crossover_px:.0f} px)")
    return Route(index, "enhanced")
