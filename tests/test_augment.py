"""training.augment.RealFraming: re-framed pairs stay consistent (landmarks follow the pixels)."""
import numpy as np
import pytest

from training.augment import LR_ROUTES, TILED_ROUTES, RealFraming


def _dot_image(points, side=128):
    image = np.zeros((side, side, 3), np.uint8)
    for x, y in points.round().astype(int):
        image[y - 1:y + 2, x - 1:x + 2] = 255
    return image


def test_landmarks_follow_the_reframed_pixels():
    rng = np.random.default_rng(0)
    points = np.array([[40.0, 50.0], [90.0, 70.0], [64.0, 100.0]], np.float32)
    framing = RealFraming(scale_sigma=0.1, shift_sigma=0.06)
    for _ in range(5):
        image, moved = framing.reframe(_dot_image(points), points, rng)
        for x, y in moved:
            patch = image[int(round(y)) - 2:int(round(y)) + 3, int(round(x)) - 2:int(round(x)) + 3]
            assert patch.max() > 100, (x, y)  # a bright dot is where the landmark moved to


def test_identity_framing_changes_nothing():
    image = np.random.default_rng(1).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    points = np.array([[10.0, 20.0]], np.float32)
    framing = RealFraming(scale_sigma=0.0, shift_sigma=0.0)
    out, moved = framing.reframe(image, points, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(moved, points)


def test_zooming_out_averages_instead_of_aliasing():
    """Zooming out by 2 is an area downscale (each output pixel the mean of 2 x 2), not every other pixel
    picked by cubic sampling, which turns fine detail into noise in the targets."""
    image = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    framing = RealFraming(scale_sigma=0.0, shift_sigma=0.0)
    out, _ = framing.reframe(image, np.zeros((1, 2), np.float32), np.random.default_rng(0), zoom_out=2.0)
    means = image.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3))
    assert np.abs(out[32:96, 32:96] - means).max() <= 0.5


@pytest.mark.parametrize("route", LR_ROUTES + TILED_ROUTES)
def test_every_lr_route_gives_the_model_input_size(route):
    hr = np.random.default_rng(2).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    lr = RealFraming().make_lr(hr, 16, route, np.random.default_rng(0))
    assert lr.shape == (16, 16, 3) and lr.dtype == np.uint8


def test_batch_keeps_the_clean_share_and_leaves_inputs_untouched():
    rng = np.random.default_rng(3)
    hr = rng.integers(0, 256, (40, 128, 128, 3), dtype=np.uint8)
    lr = rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8)
    lms = rng.uniform(20, 100, (40, 68, 2)).astype(np.float32)
    copies = hr.copy(), lr.copy(), lms.copy()
    new_hr, new_lr, new_lms = RealFraming(clean_share=0.5)(hr, lr, lms, np.random.default_rng(0))
    unchanged = [(new_hr[i] == hr[i]).all() for i in range(40)]
    assert 8 <= sum(unchanged) <= 32  # about half stay clean
    for before, after in zip(copies, (hr, lr, lms)):
        np.testing.assert_array_equal(before, after)


def test_only_the_chosen_routes_are_drawn(monkeypatch):
    drawn = []
    framing = RealFraming(clean_share=0.0, routes=("smaller",), smallest_native=0.55)
    original = RealFraming.make_lr

    def recording(self, hr, size, route, rng):
        drawn.append(route)
        return original(self, hr, size, route, rng)

    monkeypatch.setattr(RealFraming, "make_lr", recording)
    rng = np.random.default_rng(4)
    hr = rng.integers(0, 256, (12, 128, 128, 3), dtype=np.uint8)
    framing(hr, hr[:, ::8, ::8].copy(), rng.uniform(20, 100, (12, 68, 2)).astype(np.float32), rng)
    assert drawn == ["smaller"] * 12


def test_training_cli_refuses_an_unknown_route():
    from training.train import parse_args

    assert parse_args(["--real-framing", "--framing-routes", "smaller,area"]).framing_routes == ("smaller", "area")
    with pytest.raises(SystemExit):
        parse_args(["--framing-routes", "bilinear"])


def test_native_route_zooms_the_pair_out_so_the_face_is_smaller_than_the_window():
    """What a tiled model sees of a small face: the face at 0.55-1 x the window, its surroundings around it,
    and an HR target that shows the same zoomed-out window."""
    hr = np.zeros((1, 128, 128, 3), np.uint8)
    hr[0, 32:96, 32:96] = 255  # the "face": half the crop's side
    points = np.array([[[32.0, 32.0], [96.0, 96.0]]], np.float32)
    framing = RealFraming(clean_share=0.0, routes=("native",), smallest_native=0.55, scale_sigma=0.0, shift_sigma=0.0)
    new_hr, new_lr, new_points = framing(hr, hr[:, ::8, ::8].copy(), points, np.random.default_rng(5))
    face_side = (new_hr[0, :, :, 0] > 127).sum(axis=1).max()
    assert 0.55 * 64 - 2 <= face_side < 64  # zoomed out by 1 / U(0.55, 1)
    assert np.isclose(new_points[0, 1, 0] - new_points[0, 0, 0], face_side, atol=2)  # landmarks follow
    assert np.isclose((new_lr[0, :, :, 0] > 127).sum(axis=1).max(), face_side / 8, atol=1.5)  # LR: area of the window
