"""training.degrade: the simulated camera (blur, resize, noise, JPEG/H.264) and its use in training pairs."""
import cv2
import numpy as np
import pytest

from training.augment import RealFraming
from training.degrade import (
    LEVELS, TRAINING_MIX, Degradation, DegradationParams, blur_kernel, degrade_face, degrade_image, degrade_lr_set,
    jitter_colours,
)


def _face(size=128, seed=0):
    """A smooth face-like test image with some edges (uint8 RGB)."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([0.6 + 0.3 * np.sin(6 * x), 0.5 + 0.3 * np.cos(5 * y), 0.4 + 0.2 * np.sin(4 * (x + y))], -1)
    image[size // 3:size // 3 + 6, size // 4:3 * size // 4] *= 0.3  # a dark bar, like eyes
    noise = np.random.default_rng(seed).normal(0, 0.01, image.shape)
    return np.clip((image + noise) * 255, 0, 255).astype(np.uint8)


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))


def test_clean_settings_are_a_plain_downscale():
    hr = _face()
    params = DegradationParams("clean", resize_filter="area")
    assert params.is_clean
    assert np.array_equal(degrade_face(hr, 16, params, np.random.default_rng(0)),
                          cv2.resize(hr, (16, 16), interpolation=cv2.INTER_AREA))


def test_the_same_seed_gives_the_same_faces_and_another_seed_does_not():
    hr = np.stack([_face(seed=i) for i in range(4)])
    a, b = degrade_lr_set(hr, 16, "camera", seed=3), degrade_lr_set(hr, 16, "camera", seed=3)
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, degrade_lr_set(hr, 16, "camera", seed=4))
    with pytest.raises(ValueError, match="unknown degradation level 'soft'"):
        degrade_lr_set(hr, 16, "soft", seed=0)


def test_levels_get_worse_in_order():
    """Mean PSNR of each level's LR against the clean area downscale: clean > camera > heavy."""
    hr = np.stack([_face(seed=i) for i in range(24)])
    clean = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in hr])
    scores = {level: np.mean([_psnr(d, c) for d, c in zip(degrade_lr_set(hr, 16, level, 0), clean)])
              for level in ("camera", "heavy")}
    assert 22 < scores["heavy"] < scores["camera"] < 40


@pytest.mark.parametrize("codec", [("jpeg", 30), ("h264", 36)])
def test_compression_round_trips_keep_the_size_and_cost_more_at_lower_quality(codec):
    image = _face(37)  # odd size: padded to the codec's blocks, cropped back
    kind, setting = codec
    better = (kind, 95) if kind == "jpeg" else (kind, 14)
    rng = np.random.default_rng(0)
    worse_out = degrade_image(image, DegradationParams("t", codec=codec, offset=(3, 5)), rng)
    better_out = degrade_image(image, DegradationParams("t", codec=better, offset=(3, 5)), rng)
    assert worse_out.shape == better_out.shape == image.shape
    assert _psnr(worse_out, image) + 3 < _psnr(better_out, image) < 60


def test_noise_has_the_drawn_strength_and_grey_noise_is_the_same_in_every_channel():
    flat = np.full((64, 64, 3), 128, np.uint8)
    rng = np.random.default_rng(0)
    colour = degrade_image(flat, DegradationParams("t", noise=("gaussian", 6.0, False)), rng).astype(float)
    assert 5.5 < colour.std() < 6.5
    grey = degrade_image(flat, DegradationParams("t", noise=("gaussian", 6.0, True)), rng)
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    shot = degrade_image(flat, DegradationParams("t", noise=("poisson", 0.4, False)), rng).astype(float)
    assert 6.0 < shot.std() < 8.3  # sqrt(0.4 * 128) = 7.2 grey levels


def test_blur_kernel_is_normalised_and_anisotropic_when_asked():
    k = blur_kernel(2.0, 0.5, 0.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    centre = k.shape[0] // 2
    assert k[centre, centre + 2] > 10 * k[centre + 2, centre]  # wide along x, narrow along y


def test_blur_is_sized_in_recorded_pixels():
    """The same blur in recorded pixels gives the same recording whether applied at 8x or at 1x."""
    hr = _face(128)
    params = DegradationParams("t", blur=(0.8, 0.8, 0.0), resize_filter="area")
    at_hr = degrade_face(hr, 16, params, np.random.default_rng(0))
    at_lr = degrade_image(cv2.resize(hr, (16, 16), interpolation=cv2.INTER_AREA),
                          DegradationParams("t", blur=(0.8, 0.8, 0.0)), np.random.default_rng(0))
    assert _psnr(at_hr, at_lr) > 35


def test_every_draw_is_valid_and_the_training_mix_includes_clean_faces():
    rng = np.random.default_rng(0)
    for level in LEVELS.values():
        for _ in range(50):
            p = level.params(rng)
            assert p.level == level.name
            if level.name == "clean":
                assert p.blur is None and p.noise is None and p.codec is None
    assert dict(TRAINING_MIX)["clean"] > 0 and sum(w for _, w in TRAINING_MIX) == pytest.approx(1.0)
    assert Degradation("x").params(rng).is_clean


def test_colour_jitter_changes_hr_and_lr_alike():
    hr = _face(128)
    lr = cv2.resize(hr, (16, 16), interpolation=cv2.INTER_AREA)
    for seed in range(20):
        new_hr, new_lr = jitter_colours([hr, lr], np.random.default_rng(seed), grey_prob=0.5)
        again = cv2.resize(new_hr, (16, 16), interpolation=cv2.INTER_AREA).astype(int)
        assert np.abs(again - new_lr).max() <= 2  # the pair still matches (rounding only)
        if np.array_equal(new_hr[..., 0], new_hr[..., 2]):
            assert np.array_equal(new_lr[..., 0], new_lr[..., 2])


def test_training_pairs_with_a_camera_degrade_every_lr_and_are_seeded():
    hr = np.stack([_face(seed=i) for i in range(8)])
    lr = np.stack([cv2.resize(f, (16, 16), interpolation=cv2.INTER_AREA) for f in hr])
    landmarks = np.zeros((8, 68, 2), np.float32) + 64
    framing = RealFraming(clean_share=1.0, camera=(("heavy", 1.0),))  # no re-framing: only the camera acts
    new_hr, new_lr, new_lm = framing(hr, lr, landmarks, np.random.default_rng(0))
    again = framing(hr, lr, landmarks, np.random.default_rng(0))
    assert np.array_equal(new_lr, again[1]) and np.array_equal(new_hr, again[0])
    assert np.array_equal(new_lm, landmarks)
    assert all(_psnr(d, c) < 35 for d, c in zip(new_lr, lr))  # every LR went through the heavy camera
    plain = RealFraming(clean_share=1.0)  # no camera: the pairs stay exactly as given
    untouched = plain(hr, lr, landmarks, np.random.default_rng(0))
    assert np.array_equal(untouched[0], hr) and np.array_equal(untouched[1], lr)
