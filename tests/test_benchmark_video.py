"""benchmarks.video: the synthetic camera's ground truth and shifts agree, and the flicker metric measures what
it says. Small synthetic scenes; the one end-to-end run uses the fast fake model and a few frames."""
import json

import cv2
import numpy as np
import pytest

from benchmarks.frames import y_channel
from benchmarks.video import (camera_shifts, face_psnr, moved_box, record, scene_error, shift_image,
                              temporal_flicker)
from training.burst import frame_settings


def textured_scene(height=96, width=160, seed=0) -> np.ndarray:
    """Smooth random texture (blurred noise), BGR uint8, so that interpolation is well behaved."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(noise, (0, 0), 2.0)


def test_integer_shifts_move_the_scene_exactly_and_are_undone_by_the_recorded_shift():
    scene = textured_scene()
    moved = shift_image(scene, 3, -2)  # content at (x, y) lands at (x + 3, y - 2)
    assert np.array_equal(moved[:-2, 3:], scene[2:, :-3])
    back = shift_image(moved, -3, 2)
    assert np.array_equal(back[4:-4, 6:-6], scene[4:-4, 6:-6])


def test_sub_pixel_truth_is_undone_by_the_recorded_shift_and_not_by_another():
    """Each ground-truth frame moved back by its recorded shift is the scene again (up to interpolation, a
    fraction of a grey level on a smooth texture); half a pixel off is clearly worse."""
    scene = textured_scene()
    shifts = camera_shifts("static", 5, 8, np.random.default_rng(1))
    assert np.all(np.abs(shifts) <= 4.0) and np.abs(shifts).max() > 1.0  # +-0.5 LR px at K = 8

    def undo_error(truth, dx, dy):
        return np.abs(shift_image(truth, dx, dy).astype(float) - scene)[8:-8, 8:-8].mean()

    for dx, dy in shifts:
        truth = shift_image(scene, dx, dy)
        exact, off = undo_error(truth, -dx, -dy), undo_error(truth, -dx + 0.5, -dy)
        assert exact < 0.5 and off > 3 * exact


def test_camera_shifts_pan_steadily_and_walk_within_the_bound():
    pan = camera_shifts("panning", 6, 4, np.random.default_rng(0), pan=0.3)
    assert np.allclose(np.diff(pan[:, 0]), 0.3 * 4) and np.allclose(pan[:, 1], 0) and abs(pan[:, 0].mean()) < 1e-9
    walk = camera_shifts("static", 200, 8, np.random.default_rng(0), motion="walk")
    assert np.all(np.abs(walk) <= 4.0 + 1e-9)
    assert np.abs(np.diff(walk, axis=0)).mean() < np.abs(np.diff(camera_shifts(
        "static", 200, 8, np.random.default_rng(0)), axis=0)).mean()  # smoother than independent jitter


def test_clean_still_camera_bicubic_scores_a_direct_resize():
    """No degradation, no shake: every LR frame is the scene area-downscaled, every truth is the scene, and
    bicubic of a frame scores exactly what bicubic of a direct resize scores, in every face box."""
    scene = textured_scene(96, 160)
    truths, lows = record(scene, np.zeros((3, 2)), 8, None, seed=0)
    direct = cv2.resize(scene, (20, 12), interpolation=cv2.INTER_AREA)
    box = (40.0, 24.0, 48.0, 40.0)
    expected = face_psnr(y_channel(cv2.resize(direct, (160, 96), interpolation=cv2.INTER_CUBIC)), y_channel(scene),
                         box, (0, 0))
    for truth, low in zip(truths, lows):
        assert np.array_equal(truth, scene) and np.array_equal(low, direct)
        bicubic = cv2.resize(low, (160, 96), interpolation=cv2.INTER_CUBIC)
        assert face_psnr(y_channel(bicubic), y_channel(truth), box, (0, 0)) == expected


def test_face_boxes_and_error_maps_follow_the_shift():
    """A face's box moved by the frame's shift holds the same truth pixels, and an error map moved back lands
    on scene coordinates (integer shifts: exact)."""
    scene = textured_scene()
    box, shift = (40, 30, 24, 20), (5.0, -3.0)
    truth = shift_image(scene, *shift)
    x, y, w, h = moved_box(box, shift)
    assert np.array_equal(truth[y:y + h, x:x + w], scene[30:50, 40:64])
    error_in_scene = np.zeros(scene.shape[:2], np.float32)
    error_in_scene[30:50, 40:64] = 7.0  # an error that sits on the face
    output_y = y_channel(truth) + shift_image(error_in_scene, *shift, cv2.INTER_NEAREST)
    back = scene_error(output_y, y_channel(truth), shift)
    assert np.allclose(back[30:50, 40:64], 7.0) and np.allclose(back[60:, 100:], 0.0)


def test_flicker_is_zero_for_a_steady_error_and_positive_for_a_varying_one():
    steady = np.repeat(np.random.default_rng(0).normal(0, 5, (1, 16, 16)), 8, axis=0)
    assert temporal_flicker(steady) == pytest.approx(0.0, abs=1e-9)
    varying = steady + np.arange(8)[:, None, None] % 2 * 4.0  # +4 on every other frame: std 2 everywhere
    assert temporal_flicker(varying) == pytest.approx(2.0)


def test_a_camera_keeps_its_optics_and_varies_only_codec_quality():
    from training.degrade import LEVELS

    camera = LEVELS["heavy"].params(np.random.default_rng(3))
    frames = [frame_settings(camera, np.random.default_rng(t)) for t in range(6)]
    assert all(f.blur == camera.blur and f.noise == camera.noise and f.offset == camera.offset for f in frames)
    assert all(f.codec[0] == camera.codec[0] and abs(f.codec[1] - camera.codec[1]) <= 5 for f in frames)
    assert frame_settings(None, np.random.default_rng(0)) is None


def test_a_degraded_still_camera_records_each_frame_with_new_noise():
    """The only thing that changes between frames of a camera that does not move is its noise and codec."""
    from training.degrade import DegradationParams

    camera = DegradationParams("camera", noise=("gaussian", 4.0, False), codec=("jpeg", 80))
    truths, lows = record(textured_scene(), np.zeros((3, 2)), 4, camera, seed=0)
    assert all(np.array_equal(truth, truths[0]) for truth in truths)
    assert not np.array_equal(lows[0], lows[1]) and np.abs(lows[0].astype(int) - lows[1]).mean() < 8


@pytest.mark.shared
def test_quick_run_writes_tables_picture_and_plot(tmp_path, shared_dir, fast_sr_artifact):
    """End to end on the fake fast model, 4 frames of one camera and 6 street frames."""
    from benchmarks.video import main

    assert main(["--models", str(fast_sr_artifact), "--quick", "--frames", "4", "--cameras", "static",
                 "--street-frames", "6", "--street-upscale", "8", "--outdir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "video.json").read_text())
    rows = {r["method"]: r for r in payload["summary"]}
    assert rows["bicubic"]["gain_db"] == 0.0 and rows["bicubic"]["flicker_ratio"] == 1.0
    assert rows["single"]["faces"] >= 4 and rows["single"]["frames"] == 4
    camera = payload["cameras"][0]
    # before any track is confirmed the runtime shows bicubic: frame 0 scores as bicubic for every method
    for method in camera["methods"]:
        assert [face[0] for face in camera["psnr"][method]] == [face[0] for face in camera["psnr"]["bicubic"]]
    assert (tmp_path / "video.md").is_file() and (tmp_path / "video_faces.png").is_file()
    assert (tmp_path / "video.png").is_file()


def test_fused_methods_are_left_out_where_the_runtime_cannot_fuse(monkeypatch):
    from benchmarks import video

    monkeypatch.setattr(video, "fusion_available", lambda: False)
    assert video.method_names([0, 5]) == ["bicubic", "single"]
    monkeypatch.setattr(video, "fusion_available", lambda: True)
    assert video.method_names([0, 1, 5]) == ["bicubic", "single", "fused5"]
