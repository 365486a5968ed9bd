"""Tiled enhancement at a face's recorded resolution (runtime.tiles): geometry, stitching, routing, pipeline."""
import json

import numpy as np
import pytest

from conftest import make_sr_artifact
from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.errors import ModelArtifactError
from runtime.compose import FEATHER_FRACTION
from runtime.detect import Detection
from runtime.faces import FaceJob, Square, cover_square, crop_square, native_region, square_around, square_from_region
from runtime.pipeline import EnhanceConfig, Enhancer, PreparedFrame, enhance_frames
from runtime.routing import ModelFit, Route, route
from runtime.tiles import Tiling, cut_tiles, enhance_regions, stitch, tile_starts


def nearest_x4(batch: np.ndarray) -> np.ndarray:
    """A perfectly local 'model': every input pixel becomes a 4 x 4 block."""
    return batch.repeat(4, axis=2).repeat(4, axis=3)


def test_tile_starts_cover_the_region_and_end_at_its_edge():
    assert tile_starts(32, 32, 16) == [0]
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    assert tile_starts(70, 32, 16) == [0, 16, 32, 38]
    with pytest.raises(ValueError, match="smaller than one tile"):
        tile_starts(20, 32, 16)


@pytest.mark.parametrize("side", [32, 45, 80])
def test_stitched_tiles_equal_the_whole_region_for_a_local_model(side):
    region = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    tiling = Tiling.for_input(32)
    (enhanced,) = enhance_regions(nearest_x4, [region], tiling)
    assert enhanced.shape == (4 * side, 4 * side, 3)
    assert np.array_equal(enhanced, region.repeat(4, axis=0).repeat(4, axis=1))


def test_stitch_averages_overlaps_with_weights_that_favour_tile_centres():
    tiling = Tiling(tile=8, stride=4, ramp=2)
    region = np.zeros((12, 12, 1), np.float32)
    tiles, offsets = cut_tiles(region, tiling)
    # Tile values: its own index; where two tiles overlap, the one whose centre is nearer weighs more.
    outputs = np.stack([np.full((8, 8, 1), i, np.float32) for i in range(len(tiles))])
    stitched = stitch(outputs, offsets, 12, tiling)
    assert offsets == [(0, 0), (0, 4), (4, 0), (4, 4)]
    assert stitched[0, 0, 0] == 0 and stitched[11, 11, 0] == 3  # corners: one tile each
    assert 0 < stitched[0, 4, 0] < stitched[0, 5, 0] == 0.5 == stitched[0, 6, 0] < stitched[0, 7, 0] < 1


def test_native_region_covers_the_square_and_at_least_a_tile():
    for square in (Square(10.25, 20.5, 9.75), Square(3, 4, 50), Square(-5.5, 7.125, 40.0), Square(7.5, 9.875, 13.0)):
        region = native_region(square, 16)
        assert region.side >= 16 and float(region.x).is_integer() and float(region.y).is_integer()
        assert region.x <= square.x - 1 and region.x + region.side >= square.x + square.side
        assert region.y <= square.y - 1 and region.y + region.side >= square.y + square.side
    assert native_region(Square(7.5, 9.875, 13.0), 16).side == 16  # a 13 px face in a 16 px model: one tile


def test_square_comes_back_out_of_its_region_at_sub_pixel_position():
    frame = np.random.default_rng(0).integers(0, 256, (60, 60, 3), dtype=np.uint8)
    square = Square(11.25, 17.5, 20.0)  # on a 1/4 px grid: whole pixels of a x4 output
    region = native_region(square, 32)
    enhanced = crop_square(frame, region).repeat(4, axis=0).repeat(4, axis=1)
    face = square_from_region(enhanced, region, square)
    assert face.shape == (80, 80, 3)
    top, left = round((square.y - region.y) * 4), round((square.x - region.x) * 4)
    assert np.array_equal(face, enhanced[top:top + 80, left:left + 80])


def test_tiled_fit_has_no_crossover_and_takes_faces_larger_than_its_input():
    x8 = ModelFit.for_sides(16, 128)
    x4_tiled = ModelFit.for_sides(32, 128, tiled=True)
    assert x4_tiled.crossover_px == float("inf") and x4_tiled.min_native_px == 0.35 * 32  # no interpolation
    assert route(60, 240, [x8, x4_tiled]) == Route(1, "enhanced")
    assert route(60, 120, [x8, x4_tiled]).model is None  # shown 2x: less than the x4 it would add
    assert route(14, 112, [x8, x4_tiled]).model == 0  # nearer the x8 model's input
    assert route(14, 56, [x8, x4_tiled]).model == 1  # shown 4x: only the x4 model; tiled, it takes 14 px
    assert route(60, 240, [x8, ModelFit.for_sides(32, 128)]).model is None  # resized: above the crossover


def test_manifest_tiling_is_validated(tmp_path):
    path = make_sr_artifact(tmp_path, "t", "nearest", in_size=32, out_size=128, tiling={"stride": 16, "ramp": 4})
    assert load_artifact(path).tiling == Tiling(32, 16, 4)
    data = json.loads(path.read_text())
    for bad in ({"stride": 0, "ramp": 4}, {"stride": 16}, [16, 4], {"stride": 16, "ramp": 4.5}):
        path.write_text(json.dumps({**data, "tiling": bad}))
        with pytest.raises(ModelArtifactError, match="tiling"):
            load_artifact(path)
    path.write_text(json.dumps({**data, "tiling": {"stride": 40, "ramp": 4}}))  # tiles would leave gaps
    with pytest.raises(ModelArtifactError, match="does not fit the 32 px input"):
        load_artifact(path).tiling
    untiled = make_sr_artifact(tmp_path, "u", "nearest", in_size=32, out_size=128)
    assert load_artifact(untiled).tiling is None


def test_pipeline_enhances_faces_of_any_size_at_their_recorded_resolution(tmp_path):
    """Through the real batching path: a face larger and one smaller than the input, one batch of tiles;
    each face's output is `scale` x its own square, exactly what the local model makes of the frame."""
    path = make_sr_artifact(tmp_path, "t", "nearest", in_size=32, out_size=128, tiling={"stride": 16, "ramp": 4})
    frame = np.random.default_rng(1).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    squares = [Square(40.0, 30.0, 61.0), Square(5.25, 90.5, 12.0)]
    jobs = [FaceJob(i, (s.x, s.y, s.side, s.side), s, crop_square(frame, s)) for i, s in enumerate(squares)]
    prepared = PreparedFrame(frame, 0, [], jobs, [Route(0, "enhanced")] * 2, 0, 0)
    with create_backend("onnxruntime", load_artifact(path), providers=["CPUExecutionProvider"]) as backend:
        (faces,) = enhance_frames([backend], [prepared])
    big, small = faces
    assert big.sr.shape == (244, 244, 3) and np.array_equal(big.sr, jobs[0].crop.repeat(4, 0).repeat(4, 1))
    assert small.sr.shape == (48, 48, 3)
    upscaled = frame.repeat(4, axis=0).repeat(4, axis=1)
    assert np.array_equal(small.sr, upscaled[362:410, 21:69])
    assert big.lr is jobs[0].crop  # what the network saw: the recorded pixels


@pytest.mark.parametrize("grid", [1.0, 4.0])
@pytest.mark.parametrize("box", [(10.3, 20.7, 30.0, 38.0), (0.0, 0.0, 12.0, 9.0), (100.5, 50.25, 64.0, 80.0)])
def test_cover_square_holds_the_whole_box_with_the_feather_outside_it(box, grid):
    square = cover_square(box, grid)
    ramp = FEATHER_FRACTION * square.side  # where the paste-back mask is below 1
    slack = 1.0 / grid  # corner and side are snapped to 1/grid px
    assert square.x + ramp <= box[0] + slack and square.y + ramp <= box[1] + slack
    assert square.x + square.side - ramp >= box[0] + box[2] - slack
    assert square.y + square.side - ramp >= box[1] + box[3] - slack
    assert abs(square.x + square.side / 2 - (box[0] + box[2] / 2)) <= slack  # centred on the box


class StillDetector:
    def __init__(self, detections):
        self.detections = detections

    def detect(self, frame):
        return list(self.detections)


@pytest.mark.parametrize("tiled", [True, False])
def test_faces_of_a_tiled_model_are_enhanced_over_their_whole_box(tmp_path, tiled):
    """A face routed to a tiled model is framed by `cover_square`: every pixel of its detection box is the
    model's (here exactly the nearest-neighbour upscale), none is blended with interpolation. A model that
    needs training-like crops keeps the training framing."""
    tiling = {"tiling": {"stride": 16, "ramp": 4}} if tiled else {}
    path = make_sr_artifact(tmp_path, "t", "nearest", in_size=32, out_size=128, **tiling)
    frame = np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = (50.0, 30.0, 34.0, 42.0)
    config = EnhanceConfig(view="overlay", upscale=4.0, show_fps=False, enhance_all=True)
    with create_backend("onnxruntime", load_artifact(path), providers=["CPUExecutionProvider"]) as backend:
        result = Enhancer(backend, StillDetector([Detection(box, 0.95)]), config).process(frame, 0)
    (face,) = result.faces
    if not tiled:
        assert face.square == square_around(box, grid=4.0)
        return
    assert face.square == cover_square(box, grid=4.0) and face.native.shape[0] == round(face.square.side)
    upscaled = frame.repeat(4, axis=0).repeat(4, axis=1)
    x, y, w, h = (int(v * 4) for v in box)
    assert np.array_equal(result.view[y:y + h, x:x + w], upscaled[y:y + h, x:x + w])


def test_forced_faces_go_through_the_input_of_a_tiled_model(tmp_path):
    """--enhance-all on faces routing would keep (shown at their recorded size): one input per face, not tiles
    at 4x their size that the display shrinks again; a face routing enhances keeps the tiled route."""
    path = make_sr_artifact(tmp_path, "t", "nearest", in_size=32, out_size=128, tiling={"stride": 16, "ramp": 4})
    frame = np.random.default_rng(3).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    box = (50.0, 30.0, 34.0, 42.0)
    with create_backend("onnxruntime", load_artifact(path), providers=["CPUExecutionProvider"]) as backend:
        def run(upscale):
            config = EnhanceConfig(view="overlay", upscale=upscale, show_fps=False, enhance_all=True)
            (face,) = Enhancer(backend, StillDetector([Detection(box, 0.95)]), config).process(frame, 0).faces
            return face

        forced, routed = run(1.0), run(4.0)
    assert forced.route == "forced" and forced.square == square_around(box) and forced.sr.shape == (128, 128, 3)
    assert routed.route == "enhanced" and routed.square == cover_square(box, grid=4.0)
    assert routed.sr.shape[0] == round(routed.square.side * 4)
