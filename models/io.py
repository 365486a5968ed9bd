"""What a model promises at its boundary: the declaration export, calibration and the runtime read.

Generic code never reads one architecture's attributes (a DIC's keypoint count, a step count); it reads
the `ModelIO` that the registry gives for a model and config. Torch-free on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass

INPUT_NAME = "lr"
IMAGE_OUTPUT_NAME = "sr"


@dataclass(frozen=True)
class ExtraOutput:
    """An output besides the SR image, e.g. landmarks [N, 68, 2] or boundary maps [N, 11, H, W]."""

    name: str
    shape: tuple[int, ...]  # per face, after the batch axis
    value_range: tuple[float, float]
    description: str


@dataclass(frozen=True)
class ModelIO:
    """A model's I/O: RGB [N, 3, input_size, input_size] in [0, 1] -> RGB [N, 3, output_size, output_size].

    Args:
        input_size: side of the square LR input in pixels.
        scale: upscaling factor (output side = input_size * scale).
        recurrent_steps: the most steps a recurrent model unrolls; None for a model that is not recurrent.
        extra_outputs: optional outputs an export may add (`--with-landmarks` adds "landmarks").
        folds_batchnorm: BatchNorm is folded into the convolutions for inference (export, benchmarks).
        int8_keep_ops: op types this model keeps in fp32 at int8, on top of the precision's defaults.
        int8_keep_weights: fnmatch patterns of weight names: the nodes reading them stay fp32 at int8 (names
            survive re-export, node names do not).
        local: fully convolutional with a receptive field well inside the input, so it can enhance a face at its
            recorded resolution tile by tile (`runtime.tiles`); export verifies it before the manifest says so.
    """

    input_size: int
    scale: int
    recurrent_steps: int | None = None
    extra_outputs: tuple[ExtraOutput, ...] = ()
    folds_batchnorm: bool = False
    int8_keep_ops: tuple[str, ...] = ()
    int8_keep_weights: tuple[str, ...] = ()
    local: bool = False

    @property
    def output_size(self) -> int:
        return self.input_size * self.scale

    @property
    def is_recurrent(self) -> bool:
        return self.recurrent_steps is not None

    def extra(self, name: str) -> ExtraOutput:
        for output in self.extra_outputs:
            if output.name == name:
                return output
        offered = ", ".join(o.name for o in self.extra_outputs) or "none"
        raise ValueError(f"this model has no {name!r} output (extra outputs: {offered}); export without "
                         f"--with-{name}")

    def steps_or_default(self, steps: int | None) -> int | None:
        """Validate a requested step count: 1..recurrent_steps (default: all) for a recurrent model, and
        nothing for one that is not recurrent. Raises ValueError saying what is allowed."""
        if not self.is_recurrent:
            if steps is not None:
                raise ValueError(f"--steps {steps} was given, but this model is not recurrent (it has no steps to "
                                 "unroll); leave it out")
            return None
        steps = self.recurrent_steps if steps is None else steps
        if not 1 <= steps <= self.recurrent_steps:
            raise ValueError(f"--steps {steps} is out of range: this model unrolls 1..{self.recurrent_steps} steps")
        return steps
