"""Scale routing: which model, if any, enhances a face, so that no face comes out worse than recorded.

A face recorded at `native` px (the side of its framing square) and shown at `display` px:
- when it is not shown larger than recorded (display <= native), the source pixels are the best there is:
  it is not enhanced;
- otherwise, among the models whose crossover it does not exceed (the largest native size at which a model
  still beats plain interpolation, measured by `python -m benchmarks.crossover` and
  `python -m benchmarks.frames`; see `constants.CROSSOVER_RATIO`), it goes to the one whose input side fits
  its native size best (smallest |log(native/input)|; a tiled model fits every face at least as large as its
  input). When no model takes it, it is interpolated.
`force` (the CLI's --enhance-all) enhances every other face too, with its best-fitting model, resized to that
model's input even where the model is tiled: a large face shown small would cost hundreds of tiles for pixels
the display throws away (a 100 px face: about 256 tiles of a 16 px model).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from .constants import (CROSSOVER_RATIO, MIN_FACE_INPUT_FRACTION, MIN_INPUT_RATIO, MIN_MAGNIFICATION_RATIO,
                        TILED_MIN_INPUT_RATIO)


@dataclass(frozen=True)
class ModelFit:
    """What routing needs to know about one model: its input and output sides and the native face sizes it
    takes (from `min_native_px` up to its crossover). A `tiled` model enhances faces at their recorded
    resolution (`runtime.tiles`): it has no crossover, a lower floor, and fits every face at least as large as
    its input."""

    input_px: int
    output_px: int
    crossover_px: float
    min_native_px: float = 0.0
    tiled: bool = False

    @property
    def scale(self) -> float:
        return self.output_px / self.input_px

    @classmethod
    def for_sides(cls, input_px: int, output_px: int, ratio: float = CROSSOVER_RATIO,
                  min_input_ratio: float | None = None, tiled: bool = False) -> "ModelFit":
        floor = MIN_INPUT_RATIO if min_input_ratio is None else min_input_ratio
        if tiled:  # no interpolation up to the input (see constants.TILED_MIN_INPUT_RATIO)
            return cls(input_px, output_px, math.inf, min(floor, TILED_MIN_INPUT_RATIO) * input_px, tiled)
        return cls(input_px, output_px, ratio * input_px, floor * input_px)

    def distance(self, native_px: float) -> float:
        """How far a face's native size is from what the model was trained on (log scale)."""
        if self.tiled and native_px >= self.input_px:
            return 0.0
        return abs(math.log(max(native_px, 1.0) / self.input_px))


def model_fit(artifact) -> ModelFit:
    """A loaded artifact's fit; weights trained on faces smaller than the input (their manifest's
    `min_input_ratio`) take faces down to that size."""
    manifest = artifact.manifest
    return ModelFit.for_sides(artifact.input_hw[0], artifact.output_hw[0],
                              min_input_ratio=manifest.min_input_ratio if manifest is not None else None,
                              tiled=artifact.tiling is not None)


def default_min_face(artifacts) -> float:
    """The default --min-face: MIN_FACE_INPUT_FRACTION x the smallest model input, or lower where a model's
    weights were trained on smaller faces (its routing floor): faces the models can use are not skipped."""
    return min(min(MIN_FACE_INPUT_FRACTION * a.input_hw[0], model_fit(a).min_native_px) for a in artifacts)


# Why a face keeps its recorded pixels, and what would enhance it: the run's summary counts faces by these kinds
# and its last log line repeats the advice.
KEPT = {
    "display": ("shown at or below their recorded size", "show them larger: --upscale 8 for a x8 model, 4 for x4"),
    "crossover": ("larger than every model's crossover", "nothing: faces this large look best as recorded"),
    "range": ("outside every model's size range", "a model trained for that size (e.g. add the x4 model), or "
                                                  "--enhance-all"),
    "magnification": ("shown enlarged less than their model's scale", "--upscale of at least the model's scale, or "
                                                                      "a model of a smaller scale for them (the x4 "
                                                                      "model: export --model pfsr_x4)"),
    "non_finite": ("the model's output was not finite (NaN/Inf)", "re-export the model and check its parity"),
}


@dataclass(frozen=True)
class Route:
    """The decision for one face: `model` is an index into the models, or None (keep the source pixels);
    `kind` is a key of KEPT when the face is kept ("" when enhanced)."""

    model: int | None
    reason: str
    kind: str = field(default="", compare=False)


def best_fit(native_px: float, models: list[ModelFit], candidates: list[int] | None = None) -> int:
    """Index of the model (among `candidates`) that fits the native size best (`ModelFit.distance`)."""
    candidates = list(range(len(models))) if candidates is None else candidates
    return min(candidates, key=lambda i: models[i].distance(native_px))


FORCED = "forced"  # the reason of a face enhanced only because of `force`
CAMERA_GRADE = "enhanced by the camera-grade twin (the recording looks noisy or compressed)"
FUSED_GRADE = "enhanced by the fused-grade twin (the face was fused with its earlier frames)"
FUSED_MIN_EARLIER = 1  # earlier frames a face must be fused with before the fused-grade twin reads it
NON_FINITE = "the model's output was not finite (NaN/Inf): recorded pixels kept"  # set after inference


def kept_summary(counts: dict[str, int]) -> str:
    """One line: how many faces were kept for each reason, and what would enhance them."""
    return "; ".join(f"{n} {KEPT[kind][0]} (to enhance them: {KEPT[kind][1]})" for kind, n in counts.items() if n)


def route(native_px: float, display_px: float, models: list[ModelFit], force: bool = False) -> Route:
    """The face's `Route`; with `force`, a face routing would keep goes to its best-fitting model as FORCED
    (the pipeline then runs it through the model's input even on a tiled model: see `runtime.pipeline`)."""
    decision = _route(native_px, display_px, models)
    if force and decision.model is None:
        return Route(best_fit(native_px, models), FORCED)
    return decision


def _route(native_px: float, display_px: float, models: list[ModelFit]) -> Route:
    if display_px <= native_px:
        return Route(None, "shown at or below its recorded size", "display")
    if all(native_px > model.crossover_px for model in models):
        largest = max(model.crossover_px for model in models)
        return Route(None, f"{native_px:.0f} px is above every model's crossover ({largest:.0f} px)", "crossover")
    in_range = [i for i, model in enumerate(models) if model.min_native_px <= native_px <= model.crossover_px]
    if not in_range:
        ranges = ", ".join(f"{model.min_native_px:.0f}-{model.crossover_px:.0f}" for model in models)
        return Route(None, f"{native_px:.0f} px is outside every model's range ({ranges} px)", "range")
    magnification = display_px / native_px
    takers = [i for i in in_range if magnification >= MIN_MAGNIFICATION_RATIO * models[i].scale]
    if not takers:
        least = min(models[i].scale for i in in_range)
        return Route(None, f"shown {magnification:.1f}x its recorded size, less than the x{least:g} its "
                           "model would add", "magnification")
    return Route(best_fit(native_px, models, takers), "enhanced")


@dataclass(frozen=True)
class Twins:
    """Models paired with twins trained for other input: routing sees only the others (`primary`), and a face
    routed to a model with twins goes where the camera-grade twin's `RecordingGate`, reading the face as
    recorded, sends it:
    - a recording that looks clean stays with the model routed to, fused or not (on a clean or mild camera the
      clean weights beat both twins, also on fused faces: docs/runtime.md, "Temporal fusion");
    - a noisy or compressed one goes to the fused-grade twin when the face was fused with at least
      FUSED_MIN_EARLIER earlier frames (`--fuse-frames`; that twin was trained on such faces, `training.burst`),
      else to the camera-grade twin.
    A model with a fused-grade twin and no camera-grade one gives it every fused face.
    `twin_of` maps a primary model's index to (the camera-grade twin's index, its gate), `fused_of` to the
    fused-grade twin's index."""

    primary: tuple[int, ...]
    twin_of: dict = field(default_factory=dict)
    fused_of: dict = field(default_factory=dict)

    @classmethod
    def pair(cls, fits: list[ModelFit], gates: list, fused: list[bool] | None = None) -> "Twins":
        """Pair each model that has a gate (`gates[i]`, else None) or reads fused faces (`fused[i]`) with a
        plain model of the same fit (input and output sides, tiled or not); a twin with no partner routes like
        any other model."""
        fused = fused or [False] * len(fits)
        plain = [j for j in range(len(fits)) if gates[j] is None and not fused[j]]

        def partner(i: int, taken: dict) -> int | None:
            return next((j for j in plain if j not in taken and (fits[j].input_px, fits[j].output_px, fits[j].tiled)
                         == (fits[i].input_px, fits[i].output_px, fits[i].tiled)), None)

        twin_of, fused_of = {}, {}
        for i in range(len(fits)):
            if gates[i] is not None and (j := partner(i, twin_of)) is not None:
                twin_of[j] = (i, gates[i])
            elif fused[i] and (j := partner(i, fused_of)) is not None:
                fused_of[j] = i
        twins = {i for i, _ in twin_of.values()} | set(fused_of.values())
        return cls(tuple(i for i in range(len(fits)) if i not in twins), twin_of, fused_of)

    def __bool__(self) -> bool:
        return bool(self.twin_of or self.fused_of)

    def route(self, native_px: float, display_px: float, fits: list[ModelFit], force: bool = False) -> Route:
        """`route` over the primary models, with their indices into `fits`."""
        decision = route(native_px, display_px, [fits[i] for i in self.primary], force)
        return decision if decision.model is None else replace(decision, model=self.primary[decision.model])

    def choose(self, decision: Route, face, fused_with: int = 0) -> Route:
        """The twin instead of its partner where this face (BGR pixels as recorded, any size; fused with
        `fused_with` earlier frames) calls for one."""
        fused = fused_with >= FUSED_MIN_EARLIER and decision.model in self.fused_of
        if decision.model in self.twin_of:
            twin, gate = self.twin_of[decision.model]
            if not gate.prefers_camera(face):
                return decision
            if not fused:
                return self._to(decision, twin, CAMERA_GRADE)
        if fused:
            return self._to(decision, self.fused_of[decision.model], FUSED_GRADE)
        return decision

    @staticmethod
    def _to(decision: Route, twin: int, reason: str) -> Route:
        return replace(decision, model=twin, reason=FORCED if decision.reason == FORCED else reason)
