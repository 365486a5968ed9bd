"""Enhancing a face at its recorded resolution with a fixed-size model, tile by tile.

A fully convolutional model whose receptive field is small next to its input (PFSR: `ModelIO.local`) is a
local x`scale` operator: a face larger than the input does not have to be shrunk to it (which throws
recorded pixels away), and a smaller one does not have to be interpolated up to it. The face's region is
cut, at its native resolution, into input-sized tiles that overlap by half a tile; each tile is enhanced
and the outputs are averaged with weights that ramp up over `ramp` input pixels from each tile edge inside
the region, so no tile's border (where its zero padding shows) decides a pixel that another tile sees
from inside. A region smaller than one tile is cut as one tile with the frame around it as context.

`export.build` checks this on each local model (the `tiling` check: tiled vs whole-image PyTorch) and
writes the tile geometry into the manifest; without it the runtime resizes faces to the input as before.
Measured on 100 UTK test faces of 40 / 48 / 64 px (`pfsr_x4_frames_utk`, Y-PSNR at 128 px against the HR):
tiles with stride 16 and ramp 4 score within 0.01 dB of the model run on the whole face (31.41 / 32.97 /
36.23 dB), where shrinking the face to the 32 px input scores 28.64 / 29.28 / 29.78 and bicubic 30.25 / 31.83 /
35.16.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tiling:
    """Tile geometry in input pixels: `tile` (the model input side), `stride` between tiles, and the `ramp`
    over which a tile's weight rises from its inner edges."""

    tile: int
    stride: int
    ramp: int

    @classmethod
    def for_input(cls, tile: int) -> "Tiling":
        """The geometry `export.build` verifies: half-tile stride, ramp of an eighth of a tile."""
        return cls(tile, max(1, tile // 2), max(1, tile // 8))

    def to_dict(self) -> dict:
        return {"stride": self.stride, "ramp": self.ramp}


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of `tile` px covering `length` px (>= tile); the last one ends at the edge."""
    if length < tile:
        raise ValueError(f"a region of {length} px is smaller than one tile ({tile} px)")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def cut_tiles(region: np.ndarray, tiling: Tiling) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A square region [S, S, C] (S >= tile) -> tiles [N, tile, tile, C] and their (y, x) offsets."""
    starts = tile_starts(region.shape[0], tiling.tile, tiling.stride)
    offsets = [(y, x) for y in starts for x in starts]
    t = tiling.tile
    return np.stack([region[y:y + t, x:x + t] for y, x in offsets]), offsets


def _edge_weights(length: int, ramp: float, rise_at_start: bool, rise_at_end: bool) -> np.ndarray:
    """1-D weights of one tile: a linear rise over `ramp` px from each inner edge, flat at region edges."""
    position = np.arange(length, dtype=np.float32)
    weight = np.ones(length, np.float32)
    if rise_at_start:
        weight = np.minimum(weight, (position + 1) / ramp)
    if rise_at_end:
        weight = np.minimum(weight, (length - position) / ramp)
    return weight


def stitch(outputs: np.ndarray, offsets: list[tuple[int, int]], region_side: int, tiling: Tiling) -> np.ndarray:
    """Tile outputs [N, T, T, C] (T = tile x scale, float) -> the region's output [S*scale, S*scale, C]."""
    out_tile = outputs.shape[1]
    scale = out_tile // tiling.tile
    side = region_side * scale
    last = region_side - tiling.tile
    total = np.zeros((side, side, outputs.shape[3]), np.float32)
    weights = np.zeros((side, side, 1), np.float32)
    ramp = tiling.ramp * scale
    for (y, x), tile in zip(offsets, outputs):
        wy = _edge_weights(out_tile, ramp, y > 0, y < last)
        wx = _edge_weights(out_tile, ramp, x > 0, x < last)
        weight = (wy[:, None] * wx[None, :])[..., None]
        ys, xs = slice(y * scale, y * scale + out_tile), slice(x * scale, x * scale + out_tile)
        total[ys, xs] += tile * weight
        weights[ys, xs] += weight
    return total / weights


def enhance_regions(run, regions: list[np.ndarray], tiling: Tiling) -> list[np.ndarray | None]:
    """Square BGR uint8 regions (each >= one tile) -> their enhanced BGR uint8 images, `scale` x larger
    (None for a region whose model output holds NaN or Inf).

    `run` maps a float32 RGB batch [N, 3, tile, tile] in [0, 1] to the model's image output; the tiles of
    all regions go through it as one batch."""
    from .faces import from_model_output, to_model_input

    cut = [cut_tiles(region, tiling) for region in regions]
    outputs = run(to_model_input([tile for tiles, _ in cut for tile in tiles]))
    images, start = [], 0
    for region, (tiles, offsets) in zip(regions, cut):
        mine = outputs[start:start + len(tiles)].transpose(0, 2, 3, 1)
        start += len(tiles)
        stitched = stitch(mine, offsets, region.shape[0], tiling)
        finite = np.isfinite(stitched).all()
        images.append(from_model_output(stitched.transpose(2, 0, 1)[None])[0] if finite else None)
    return images
