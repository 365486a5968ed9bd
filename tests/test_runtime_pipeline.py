"""Pipeline pieces on synthetic frames: framing and crops, tracking, composition, records, sinks, and
one frame at a time through `Enhancer` (including frames and face counts that must not stop a stream)."""
import json
import time

import cv2
import numpy as np
import pytest

from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.routing import ModelFit, Route, route
from runtime.compose import (
    SIDE_BY_SIDE_HEADER, EnhancedFace, GalleryLayout, draw_fps, feather_mask, gallery, gallery_layout, overlay,
    side_by_side,
)
from runtime.constants import FRAMING_OFFSET, FRAMING_SCALE
from runtime.detect import Detection, box_size, detection_scale
from runtime.errors import BackendError, RuntimeToolkitError, SinkError
from runtime.faces import (FaceJob, Square, crop_square, from_model_output, model_crop, resize_crop, select_faces,
                           square_around, to_model_input)
from runtime.frames import to_bgr
from runtime.pipeline import EnhanceConfig, Enhancer
from runtime.run import Lane, run_lanes
from runtime.records import BestCropStore, EventLog, sharpness
from runtime.outputs import ImageFolderSink, NullSink, Outputs, VideoFileSink, open_outputs, parse_output
from runtime.sources import ReadStatus
from runtime.timing import StageTimer
from runtime.track import IoUTracker, Track, iou, match_greedy
from tests.helpers import CPU, FakeDetector, ListSink, ListSource, det



# --- framing and crops ----------------------------------------------------------------------------------
def test_square_around_applies_the_measured_framing():
    box = (100.0, 200.0, 40.0, 50.0)
    square = square_around(box)
    size = box_size(box)
    assert square.side == round(FRAMING_SCALE * size)
    assert square.x + square.side / 2 == pytest.approx(120 + FRAMING_OFFSET[0] * size, abs=1)
    assert square.y + square.side / 2 == pytest.approx(225 + FRAMING_OFFSET[1] * size, abs=1)


def test_square_around_snaps_to_the_display_grid():
    box = (100.3, 200.6, 10.2, 11.1)
    whole = square_around(box)
    assert (whole.x, whole.y, whole.side) == tuple(float(round(v)) for v in (whole.x, whole.y, whole.side))
    fine = square_around(box, grid=8)
    assert all((v * 8) == round(v * 8) for v in (fine.x, fine.y, fine.side))  # whole pixels of an 8x display
    assert fine.side == pytest.approx(FRAMING_SCALE * box_size(box), abs=1 / 16)
    assert fine.x + fine.side / 2 == pytest.approx(105.4, abs=1 / 8)  # centre kept to the grid, not to 1 px


def _job(frame, square):
    return FaceJob(1, (0.0, 0.0, 1.0, 1.0), square, crop_square(frame, square))


def test_model_crop_samples_a_small_face_at_its_exact_position():
    # a ramp in x: bicubic interpolation reproduces it exactly, so any offset in the crop shows up
    frame = np.repeat(np.repeat((40 + 8 * np.arange(40, dtype=np.float32))[None, :, None], 30, 0), 3, 2)
    frame = np.clip(frame, 0, 255).astype(np.uint8)[:, :24]  # values 40..224
    square = Square(5.5, 4.25, 8.0)  # 8 px square -> 16 px input: each input px is half a frame px
    crop = model_crop(frame, _job(frame, square), (16, 16)).astype(np.float32)
    centres = square.x + (np.arange(16) + 0.5) * 0.5 - 0.5  # frame x of each input pixel's centre
    np.testing.assert_allclose(crop[8, 2:14, 0], 40 + 8 * centres[2:14], atol=1.0)
    assert crop.shape == (16, 16, 3)


def test_model_crop_of_a_face_larger_than_the_input_is_the_shrunk_whole_pixel_crop():
    frame = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    square = Square(10.25, 7.5, 40.0)
    np.testing.assert_array_equal(model_crop(frame, _job(frame, square), (16, 16)),
                                  resize_crop(crop_square(frame, square), (16, 16)))


def test_crop_square_replicates_the_border_outside_the_frame():
    frame = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    inside = crop_square(frame, Square(2, 3, 4))
    np.testing.assert_array_equal(inside, frame[3:7, 2:6])
    corner = crop_square(frame, Square(-2, -3, 6))
    assert corner.shape == (6, 6, 3)
    np.testing.assert_array_equal(corner[3:, 2:], frame[0:3, 0:4])
    np.testing.assert_array_equal(corner[0, 0], frame[0, 0])  # replicated top-left pixel
    np.testing.assert_array_equal(corner[0, 2:], frame[0, 0:4])
    assert crop_square(frame, Square(50, 50, 5)).shape == (5, 5, 3)  # fully outside: edge pixels, no crash
    inside[:] = 0
    assert frame.any()  # crops are copies


def test_model_input_is_rgb_nchw_in_unit_range_and_round_trips():
    crops = [np.full((16, 16, 3), (10, 20, 30), np.uint8), np.full((16, 16, 3), (255, 0, 128), np.uint8)]
    batch = to_model_input(crops)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32 and batch.flags.c_contiguous
    np.testing.assert_allclose(batch[0, :, 0, 0], np.array([30, 20, 10]) / 255.0)  # RGB order
    back = from_model_output(batch)
    np.testing.assert_array_equal(back[1], crops[1])
    assert from_model_output(np.full((1, 3, 2, 2), 1.7, np.float32))[0].max() == 255  # clipped


def test_select_faces_counts_tiny_and_over_limit_faces():
    tracks = [Track(i, (0, 0, s, s), 0.9, 0) for i, s in enumerate([10, 40, 30, 12, 60, 50], start=1)]
    coasting = Track(9, (0, 0, 80, 80), 0.9, 0, misses=1)
    selected, tiny, over = select_faces(tracks + [coasting], min_face=16, max_faces=3)
    assert [t.track_id for t in selected] == [5, 6, 2]  # largest first; the coasting track shows no face
    assert (tiny, over) == (2, 1)


def test_detection_scale():
    assert detection_scale(1920, 1080, 1280) == pytest.approx(2 / 3)
    assert detection_scale(640, 480, 1280) == 1.0


# --- tracking -------------------------------------------------------------------------------------------
def test_iou_and_greedy_matching():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    pairs = match_greedy([(0, 0, 10, 10), (100, 0, 10, 10)], [(101, 0, 10, 10), (1, 0, 10, 10)], 0.3)
    assert sorted(pairs) == [(0, 1), (1, 0)]


def test_tracker_keeps_ids_for_moving_faces_and_drops_lost_ones():
    tracker = IoUTracker(max_misses=1)
    ids = []
    for frame in range(6):  # two faces moving right, 8 px per frame
        tracks = tracker.update([det(100 + 8 * frame, 100), det(400 + 8 * frame, 120)], frame)
        ids.append(sorted(t.track_id for t in tracks))
    assert ids == [[1, 2]] * 6
    tracks = tracker.update([det(148, 100)], 6)  # face 2 vanishes: kept one round (coasting)...
    assert {t.track_id: t.misses for t in tracks} == {1: 0, 2: 1}
    assert [t.track_id for t in tracker.update([det(156, 100)], 7)] == [1]  # ...then dropped
    assert [t.track_id for t in tracker.update([det(164, 100), det(600, 300)], 8)] == [1, 3]  # new face


def test_tracker_predicts_between_detections_and_follows_fast_faces():
    tracker = IoUTracker()
    for frame in (0, 3, 6):  # detect every 3 frames; an 80 px face moves 30 px per frame: no overlap per round
        tracks = tracker.update([det(100 + 30 * frame, 200, 80)], frame)
        assert [t.track_id for t in tracks] == [1]
    between = tracker.tracks_at(7)
    assert between[0].box[0] > tracks[0].box[0] + 20  # carried along with its velocity
    assert tracker.tracks[0].frame == 6  # predicting does not change the tracker


def test_tracker_smooths_jitter():
    rng = np.random.default_rng(0)
    tracker = IoUTracker()
    raw, smoothed = [], []
    for frame in range(40):
        x = 200 + rng.normal(0, 3)
        raw.append(x)
        smoothed.append(tracker.update([det(x, 200)], frame)[0].box[0])
    assert np.std(np.diff(smoothed[5:])) < 0.8 * np.std(np.diff(raw[5:]))
    assert abs(np.mean(smoothed[5:]) - 200) < 3


# --- composition ------------------------------------------------------------------------------------------
def _face(track_id=1, x=20, y=30, side=40, enhanced=True):
    lr = np.full((16, 16, 3), 60, np.uint8)
    sr = np.full((128, 128, 3), 250, np.uint8)
    native = np.full((side, side, 3), 60, np.uint8)
    box = (x + 2.0, y + 2.0, side - 4.0, side - 4.0)
    if not enhanced:
        return EnhancedFace(track_id, box, Square(x, y, side), None, None, native, "kept", None)
    return EnhancedFace(track_id, box, Square(x, y, side), lr, sr, native)


def test_feather_mask_is_one_inside_and_fades_at_the_edges():
    mask = feather_mask(50, 0.2)
    assert mask.shape == (50, 50, 1) and mask[25, 25, 0] == 1.0
    assert mask[0, 25, 0] < 0.1 and mask[25, 0, 0] < 0.1 and mask[0, 0, 0] <= mask[0, 25, 0]


def test_overlay_pastes_faces_without_touching_the_input():
    frame = np.zeros((120, 160, 3), np.uint8)
    before = frame.copy()
    out = overlay(frame, [_face()])
    np.testing.assert_array_equal(frame, before)
    assert out.shape == frame.shape and out[50, 40].min() == 250 and out[5, 5].max() == 0
    big = overlay(frame, [_face()], upscale=2.0)
    assert big.shape == (240, 320, 3) and big[100, 80].min() == 250
    edge = overlay(frame, [_face(x=140, y=100, side=40)])  # square leaves the frame: clipped
    assert edge.shape == frame.shape and edge[115, 155].min() > 0
    kept = overlay(frame, [_face(enhanced=False)], upscale=2.0)  # routing kept the recorded pixels
    assert not kept.any()


def test_gallery_and_side_by_side_have_fixed_sizes():
    frame = np.zeros((300, 400, 3), np.uint8)
    for faces in ([], [_face(1)], [_face(i) for i in range(20)]):
        assert gallery(frame, faces).shape == (360, 400, 3)
        grid = side_by_side(faces, slots=6, tile=128)
        assert grid.shape == (SIDE_BY_SIDE_HEADER + 2 * 128, 4 * 2 * 128, 3)
    grid = side_by_side([_face(7)], slots=1, tile=128)
    assert not grid[:SIDE_BY_SIDE_HEADER].any()  # the status line's place
    row = SIDE_BY_SIDE_HEADER + 64
    assert grid[row, 64].max() == 60 and grid[row, 192].min() == 250  # recorded | enhanced
    grid = side_by_side([_face(7, enhanced=False)], slots=1, tile=128)
    assert grid[row, 192].max() == 60  # not enhanced: the recorded crop on both sides
    assert not frame.any()


def test_gallery_tiles_shrink_and_wrap_to_fit_the_faces():
    assert gallery_layout(400, 300, 1) == GalleryLayout(60, 6, 1)
    assert gallery_layout(400, 300, 12) == GalleryLayout(60, 6, 1)  # too small to wrap: 6 shown, "+6"
    assert gallery_layout(1920, 1080, 8) == GalleryLayout(216, 8, 1)
    assert gallery_layout(1920, 1080, 9) == GalleryLayout(108, 17, 2)
    frame = np.zeros((600, 800, 3), np.uint8)
    strip = gallery(frame, [_face(i) for i in range(12)])[600:]
    assert strip.shape[0] == 120  # the strip's height does not depend on the number of faces
    assert (strip[:, :, 0] == 250).sum() > 12 * 0.8 * 60 * 60  # all 12 tiles drawn (2 rows of 60 px)


def test_fps_label_is_readable_on_a_white_frame():
    white = np.full((720, 1280, 3), 255, np.uint8)
    out = draw_fps(white, 25.0, "3/4 faces enhanced")
    assert out[10:30, 8:200].min() < 100  # a dark box behind white text


def test_draw_fps_returns_a_new_image():
    image = np.zeros((40, 200, 3), np.uint8)
    out = draw_fps(image, 12.3, "2 faces")
    assert out.any() and not image.any()


# --- records ------------------------------------------------------------------------------------------------
def test_best_crop_store_keeps_the_largest_then_sharpest(tmp_path):
    store = BestCropStore(tmp_path / "crops")
    flat = np.full((64, 64, 3), 128, np.uint8)
    sharp = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    assert sharpness(sharp) > sharpness(flat)
    path = store.offer(1, flat, 40, flat)
    assert path.name == "track_00001.png" and cv2.imread(str(path)).mean() == pytest.approx(128)
    assert store.offer(1, sharp, 40, flat) is None  # same size, not sharper
    assert store.offer(1, sharp, 40, sharp) == path  # same size, sharper: replaces
    assert store.offer(1, flat, 39.5, sharp) is None  # smaller
    assert store.offer(1, flat, 60, flat) == path  # larger wins over sharper
    assert cv2.imread(str(path)).mean() == pytest.approx(128)
    assert [p.name for p in (tmp_path / "crops").iterdir()] == ["track_00001.png"]  # no temp files left
    assert store.saved(2) is None


def test_event_log_writes_one_json_object_per_line(tmp_path):
    with EventLog(tmp_path / "sub" / "events.jsonl") as events:
        events.write({"frame": 0, "track": 1})
        events.write({"frame": 1, "track": 1})
    lines = (tmp_path / "sub" / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1]


# --- sinks --------------------------------------------------------------------------------------------------
def test_output_choices(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)

    def kinds(texts, headless=False):
        outputs = open_outputs(texts, headless)
        outputs.close()
        return [type(sink) for sink in outputs.sinks]

    assert kinds(None) == [NullSink]  # no display: no window, said in the log
    assert kinds(None, headless=True) == [NullSink]
    assert kinds([str(tmp_path / "v.mp4"), str(tmp_path / "frames")]) == [VideoFileSink, ImageFolderSink]
    for text in ("display", "display://0"):
        with pytest.raises(SinkError, match="no display"):
            open_outputs([text], headless=False)
        with pytest.raises(SinkError, match="conflicts with --headless"):
            open_outputs([text], headless=True)
    with pytest.raises(SinkError, match="unknown video type '.gif'"):
        open_outputs([str(tmp_path / "x.gif")], False)


def test_outputs_pass_on_a_windows_keys():
    class Keys(NullSink):
        wants_stop, wants_next_view = False, True

    outputs = Outputs([NullSink(), Keys()])
    assert outputs.wants_next_view and not outputs.wants_stop


@pytest.mark.parametrize("text, message", [
    ("rtp://localhost", "expected rtp://HOST:PORT"),
    ("rtp://localhost:5004?fmt=x", "expected rtp://HOST:PORT"),
    ("webrtc://@/cam", "expected webrtc://HOST:PORT/NAME with a port"),
    ("v4l2:///dev/video9", "virtual webcam .* not implemented"),
    ("ftp://host/x", "unknown scheme 'ftp'"),
    ("http://@/", "with a port"),
])
def test_unknown_or_unsupported_output_schemes_are_errors_never_folders(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SinkError, match=message):
        parse_output(text)
    assert not any(tmp_path.iterdir())  # nothing was created (no folder named "rtsp:")


def test_http_output_binds_all_interfaces_for_at():
    uri = parse_output("http://@:8080/")
    assert (uri.scheme, uri.host, uri.port) == ("http", "0.0.0.0", 8080)
    assert parse_output("http://127.0.0.1:9000/").host == "127.0.0.1"


def test_video_sink_handles_odd_and_changing_sizes(tmp_path):
    path = tmp_path / "v.avi"
    with VideoFileSink(path, fps=10) as sink:
        sink.write(np.full((31, 45, 3), 100, np.uint8))  # odd: padded to 46x32
        sink.write(np.full((64, 64, 3), 100, np.uint8))  # other size: resized
    capture = cv2.VideoCapture(str(path))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 2
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (46, 32)


# --- frames -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("frame", [
    np.zeros((7, 9), np.uint8), np.zeros((7, 9, 1), np.uint8), np.zeros((7, 9, 4), np.uint8),
    np.zeros((7, 9, 3), np.uint16), np.zeros((7, 9, 3), np.float32),
])
def test_to_bgr_accepts_grey_bgra_and_deep_frames(frame):
    out = to_bgr(frame)
    assert out.shape == (7, 9, 3) and out.dtype == np.uint8


# --- one frame at a time through Enhancer -----------------------------------------------------------------
@pytest.fixture
def backend(make_artifact):
    with create_backend("onnxruntime", load_artifact(make_artifact("m", mode="linear", batch_max=4)),
                        providers=CPU) as active:
        yield active


def _enhancer(backend, detections, **config):
    return Enhancer(backend, FakeDetector(detections), EnhanceConfig(**config))


def test_no_faces(backend):
    frame = np.zeros((240, 320, 3), np.uint8)
    for view, shape in (("overlay", (240, 320, 3)), ("gallery", (288, 320, 3)), ("side-by-side", (32 + 128, 256, 3))):
        result = _enhancer(backend, [], view=view, max_faces=1).process(frame, 0)
        assert result.faces == [] and result.view.shape == shape


def test_more_faces_than_the_max_batch(backend):
    detections = [det(10 + 50 * i, 10 + 60 * (i % 3), 40) for i in range(10)]  # max batch is 4
    frame = np.random.default_rng(0).integers(0, 255, (240, 560, 3), dtype=np.uint8)
    result = _enhancer(backend, detections, enhance_all=True).process(frame, 0)
    assert len(result.faces) == 10 and len({f.track_id for f in result.faces}) == 10
    assert all(f.sr.shape == (128, 128, 3) and f.lr.shape == (16, 16, 3) for f in result.faces)


@pytest.mark.parametrize("frame", [
    np.full((239, 321), 90, np.uint8),  # grey, odd size
    np.full((240, 320, 4), 90, np.uint8),  # BGRA
    np.full((241, 333, 3), 90, np.uint8),  # odd size
])
def test_odd_frames(backend, frame):
    result = _enhancer(backend, [det(100, 100, 50)]).process(frame, 0)
    assert len(result.faces) == 1 and result.view.shape == (frame.shape[0], frame.shape[1], 3)


def test_tiny_faces_are_skipped_and_counted(backend):
    result = _enhancer(backend, [det(10, 10, 8), det(100, 100, 40)], min_face=16).process(
        np.zeros((200, 200, 3), np.uint8), 0)
    assert len(result.faces) == 1 and result.skipped_tiny == 1


def test_detection_runs_every_n_frames(backend):
    enhancer = _enhancer(backend, [det(100, 100, 40)], detect_every=3)
    frame = np.zeros((200, 300, 3), np.uint8)
    results = [enhancer.process(frame, i) for i in range(7)]
    assert enhancer.detector.calls == 3  # frames 0, 3, 6
    assert {f.track_id for r in results for f in r.faces} == {1}


def test_enhancer_does_not_modify_the_frame(backend):
    frame = np.random.default_rng(1).integers(0, 255, (200, 300, 3), dtype=np.uint8)
    before = frame.copy()
    _enhancer(backend, [det(100, 100, 60)], upscale=2.0).process(frame, 0)
    np.testing.assert_array_equal(frame, before)


def test_unknown_view_is_an_error(backend):
    with pytest.raises(RuntimeToolkitError, match="view 'mosaic'"):
        _enhancer(backend, [], view="mosaic")


@pytest.mark.parametrize("threaded", [False, True])
def test_a_run_survives_bad_frames_timeouts_and_read_errors(backend, threaded):
    good = np.zeros((100, 120, 3), np.uint8)
    items = [(ReadStatus.OK, good), (ReadStatus.TIMEOUT, None), (ReadStatus.OK, np.zeros((5, 5, 5), np.uint8)),
             (ReadStatus.ERROR, None), (ReadStatus.OK, good[..., 0]), (ReadStatus.OK, good)]
    sink, timer = ListSink(), StageTimer()
    enhancer = Enhancer(backend, FakeDetector([det(30, 30, 40)]), EnhanceConfig(), timer=timer)
    stats, = run_lanes(Lane(ListSource(items), sink, enhancer), threaded=threaded)
    assert (stats.frames, stats.bad_frames, stats.timeouts, stats.read_errors) == (3, 1, 1, 1)
    assert len(sink.views) == 3 and stats.faces == 3
    summary = timer.summary()
    assert set(summary) == {"decode", "detect", "prepare", "sr", "compose", "encode"}
    assert all(stage["frames"] == 3 for stage in summary.values())  # per written frame


def test_stage_timer_sums_a_stage_within_a_frame():
    timer = StageTimer()
    for _ in range(2):
        for _ in range(3):
            with timer.stage("encode"):
                time.sleep(0.002)
        timer.frame_done()
    summary = timer.summary()
    assert set(summary) == {"encode"} and summary["encode"]["frames"] == 2
    assert summary["encode"]["median_ms"] >= 6.0
    with pytest.raises(KeyError, match="unknown stage 'render'"):
        with timer.stage("render"):
            pass


def test_framework_errors_become_backend_errors(backend):
    backend._infer = lambda feeds: 1 / 0
    with pytest.raises(BackendError, match="onnxruntime: inference on .* failed: division by zero"):
        backend.infer({"lr": np.zeros((1, 3, 16, 16), np.float32)})


@pytest.mark.parametrize("threaded", [False, True])
def test_a_run_stops_at_max_frames(backend, threaded):
    items = [(ReadStatus.OK, np.zeros((50, 50, 3), np.uint8))] * 5
    sink = ListSink()
    stats, = run_lanes(Lane(ListSource(items), sink, _enhancer(backend, [])), max_frames=2, threaded=threaded)
    assert stats.frames == 2 and len(sink.views) == 2


# --- scale routing --------------------------------------------------------------------------------------------
X8, X4 = ModelFit(16, 128, 24.0), ModelFit(32, 128, 48.0)


@pytest.mark.parametrize("native, display, expected", [
    (12, 96, 0),  # tiny face shown 8x larger: the x8 model
    (20, 160, 0),  # closer to 16 than to 32 (log scale), and within the x8 model's crossover of 24
    (26, 104, 1),  # closer to 32: the x4 model
    (40, 160, 1),
    (60, 240, None),  # above every model's crossover: interpolate
    (20, 20, None),  # shown at its recorded size: never enhanced
    (20, 15, None),
    (26, 52, None),  # shown 2x: the x4 model's output would be shrunk, losing what it added
    (12, 48, 1),  # shown 4x: too little for the x8 model, enough for the x4 one
    (12, 95, 1),
])
def test_route_picks_the_best_fitting_model_or_none(native, display, expected):
    assert route(native, display, [X8, X4]).model == expected


def test_route_force_and_a_single_model():
    assert route(20, 20, [X8, X4], force=True) == Route(0, "forced")
    assert route(30, 240, [X8]).model is None  # 30 px > the x8 model's crossover of 24 px
    assert "crossover" in route(30, 240, [X8]).reason
    assert route(12, 48, [X8]) == Route(None, "shown 4.0x its recorded size, less than the x8 its model would add")


def test_route_keeps_faces_too_small_for_the_models_input():
    x8, x4 = ModelFit.for_sides(16, 128), ModelFit.for_sides(32, 128)
    assert (x8.min_native_px, x4.min_native_px) == (12.0, 24.0)
    assert route(20, 80, [x8, x4]).model is None  # x4 would interpolate 20 px up to 32; the x8 needs 8x
    assert route(10, 80, [x8, x4]) == Route(None, "10 px is outside every model's range (12-16, 24-32 px)")
    assert route(12, 96, [x8, x4]).model == 0
    assert route(26, 104, [x8, x4]).model == 1


def test_a_face_the_best_fit_rejects_goes_to_a_model_that_takes_it():
    tight_x8, x4 = ModelFit(16, 128, 16.0), ModelFit(32, 128, 32.0)
    assert route(20, 80, [tight_x8, x4]).model == 1  # 16 fits 20 px better, but only the x4 model takes it
    assert route(12, 96, [tight_x8, x4]).model == 0


def test_enhancer_keeps_faces_shown_at_their_recorded_size(backend):
    frame = np.random.default_rng(2).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    at_one = _enhancer(backend, [det(100, 100, 20)]).process(frame, 0)
    assert at_one.faces[0].sr is None and "recorded size" in at_one.faces[0].route
    np.testing.assert_array_equal(at_one.view[60:200, 60:200], frame[60:200, 60:200])  # untouched
    at_four = _enhancer(backend, [det(100, 100, 14)], upscale=4.0).process(frame, 0)  # less than the model's x8
    assert at_four.faces[0].sr is None and "less than the x8" in at_four.faces[0].route
    at_eight = _enhancer(backend, [det(100, 100, 14)], upscale=8.0).process(frame, 0)  # within the input size
    assert at_eight.faces[0].sr is not None and at_eight.view.shape == (1920, 2560, 3)
    too_large = _enhancer(backend, [det(100, 100, 20)], upscale=8.0).process(frame, 0)  # above the crossover
    assert too_large.faces[0].sr is None and "crossover" in too_large.faces[0].route


def test_large_faces_go_to_a_64_px_input_model_with_a_1024_px_output(make_artifact):
    """Panini_SR's I/O (64 -> 1024) beside a 16 -> 128 model: each face goes to the model that fits it, and the
    1024-px output is resized into the face's place in the frame (forced: shown 4x, less than either model's
    scale, routing alone would keep both faces)."""
    small = load_artifact(make_artifact("x8", mode="linear", in_size=16, out_size=128))
    large = load_artifact(make_artifact("panini_io", mode="linear", in_size=64, out_size=1024, batch_max=2))
    frame = np.random.default_rng(3).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    faces = [det(100, 100, 14), det(400, 200, 60)]
    with create_backend("onnxruntime", small, providers=CPU) as b16, \
            create_backend("onnxruntime", large, providers=CPU) as b64:
        result = Enhancer([b16, b64], FakeDetector(faces), EnhanceConfig(upscale=4.0, enhance_all=True)).process(
            frame, 0)
    small_face, large_face = sorted(result.faces, key=lambda f: f.box[0])
    assert small_face.lr.shape == (16, 16, 3) and small_face.sr.shape == (128, 128, 3)
    assert large_face.lr.shape == (64, 64, 3) and large_face.sr.shape == (1024, 1024, 3)
    assert result.view.shape == (1920, 2560, 3)


# --- face gating ------------------------------------------------------------------------------------------------
def test_tracks_get_an_id_only_when_confirmed():
    tracker = IoUTracker(confirm_hits=3, confirm_score=0.72)
    flicker = [det(400, 50, 20)]  # a crest figure: found now and then, low scores
    for frame in range(6):
        face = [Detection(box=(100 + 2 * frame, 100, 60, 60), score=0.9)]
        noise = [Detection(box=flicker[0].box, score=0.65)] if frame % 2 == 0 else []
        tracks = tracker.update(face + noise, frame)
        confirmed = [t for t in tracks if t.confirmed]
        assert [t.track_id for t in confirmed] == ([] if frame < 2 else [1])
    assert tracker.next_id == 2  # the flickering box never consumed an id


@pytest.mark.shared
@pytest.mark.slow
def test_default_gating_on_the_hand_labelled_street_video(shared_dir, detector_path, backend):
    """No labelled non-face becomes a face; >= 90 % of the labelled faces are (frames after confirmation)."""
    import json as json_module

    from benchmarks.gating import LABELS, run_setting
    from runtime.constants import TRACK_CONFIRM_HITS, TRACK_CONFIRM_SCORE
    from runtime.detect import FaceDetector

    labels = json_module.loads(LABELS.read_text())
    capture = cv2.VideoCapture(str(shared_dir / labels["video"]))
    frames = []
    while (item := capture.read())[0]:
        frames.append(item[1])
    result = run_setting(backend, FaceDetector(detector_path), frames, labels, TRACK_CONFIRM_HITS,
                         TRACK_CONFIRM_SCORE, detect_every=1)
    assert result["non_face_tracks"] == 0
    assert result["recall_after_warmup"] >= 0.9


def test_independent_frames_share_no_tracks(backend):
    """Photos of a folder are unrelated: the same place in the next photo is a new face with a new id."""
    enhancer = _enhancer(backend, [det(100, 100, 40)], independent_frames=True)
    frame = np.zeros((200, 300, 3), np.uint8)
    ids = [[f.track_id for f in enhancer.process(frame, i).faces] for i in range(3)]
    assert ids == [[1], [2], [3]]
    video = _enhancer(backend, [det(100, 100, 40)])
    assert [[f.track_id for f in video.process(frame, i).faces] for i in range(3)] == [[1], [1], [1]]


def test_progress_bar_for_known_lengths_and_status_lines_for_live_sources():
    import io

    from runtime import progress as progress_mod
    from runtime.progress import Progress

    bar = io.StringIO()
    known = Progress(10, enabled=True, stream=bar)
    known.update(5, 2, 12.5)
    known.close()
    assert "5/10 frames" in bar.getvalue() and "12.5 FPS" in bar.getvalue() and bar.getvalue().endswith("\n")

    lines = io.StringIO()
    live = Progress(None, enabled=True, stream=lines)
    live.update(100, 3, 9.0, dropped=4, reconnects=1)
    assert lines.getvalue() == "status: 100 frames  9.0 FPS  3 faces  4 dropped  1 reconnects\n"
    live.update(101, 3, 9.0)  # within STATUS_EVERY_S: nothing more
    assert lines.getvalue().count("\n") == 1 and progress_mod.STATUS_EVERY_S > 0

    quiet = io.StringIO()  # not a terminal: silent by default
    Progress(10, stream=quiet).update(5, 1, 1.0)
    assert quiet.getvalue() == ""
