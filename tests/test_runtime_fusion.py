"""Temporal fusion (`--fuse-frames`): registered earlier frames take noise out of a face before SR; a face that
moved or changed is left alone; with fusion off the runtime's output is unchanged."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.faces import FaceJob, Square
from runtime.fusion import TemporalFusion, noise_sigma
from runtime.pipeline import EnhanceConfig, Enhancer
from runtime.run import Lane, run_lanes
from runtime.sources import ReadStatus
from tests.helpers import CPU, FakeDetector, ListSink, ListSource, det


def _scene(seed=0, size=(120, 160)):
    """A smooth, textured grey-level scene (something phase correlation can lock onto)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (size[0] // 8, size[1] // 8)).astype(np.float32)
    return cv2.resize(coarse, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def _shifted(scene, dx, dy):
    move = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(scene, move, (scene.shape[1], scene.shape[0]), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT)


def _camera(scene, shifts, noise, seed=1):
    """Frames of a static camera that shakes by `shifts` (sub-pixel) with sensor noise; and the clean frames."""
    rng = np.random.default_rng(seed)
    clean = [_shifted(scene, dx, dy) for dx, dy in shifts]
    noisy = [np.clip(np.rint(c + rng.normal(0, noise, c.shape)), 0, 255) for c in clean]
    as_bgr = lambda a: np.repeat(a[..., None], 3, axis=2).astype(np.uint8)  # noqa: E731
    return [as_bgr(n) for n in noisy], [as_bgr(np.clip(np.rint(c), 0, 255)) for c in clean]


JOB = FaceJob(1, (60.0, 40.0, 30.0, 30.0), Square(60, 40, 30), np.zeros((30, 30, 3), np.uint8))
FACE = (slice(40, 70), slice(60, 90))


def _rms(a, b):
    return float(np.sqrt(np.mean((a[FACE].astype(float) - b[FACE].astype(float)) ** 2)))


def test_fusing_a_shaking_static_camera_takes_most_of_the_noise_out():
    shifts = [(0.0, 0.0), (0.4, -0.3), (-0.35, 0.2), (0.25, 0.45), (-0.2, -0.4)]
    noisy, clean = _camera(_scene(), shifts, noise=6.0)
    fusion = TemporalFusion(5)
    for frame in noisy[:-1]:
        fusion.fuse(frame, [JOB])
    fused = fusion.fuse(noisy[-1], [JOB])
    before, after = _rms(noisy[-1], clean[-1]), _rms(fused, clean[-1])
    assert fusion.used == 4 + 3 + 2 + 1  # every earlier window registered
    assert after < 0.6 * before, (before, after)  # 5 frames: noise / sqrt(5) plus the interpolation's own error
    outside = np.ones(noisy[-1].shape[:2], bool)
    outside[24:86, 44:106] = False
    assert np.array_equal(fused[outside], noisy[-1][outside])  # only the face's window is touched


def test_a_face_that_changed_is_not_averaged_in():
    noisy, _ = _camera(_scene(), [(0.0, 0.0)] * 3, noise=2.0)
    fusion = TemporalFusion(3)
    fusion.fuse(noisy[0], [JOB])
    fusion.fuse(noisy[1], [JOB])
    changed = noisy[2].copy()
    changed[FACE] = 255 - changed[FACE]  # someone walked in front of the face
    fused = fusion.fuse(changed, [JOB])
    assert np.array_equal(fused[FACE], changed[FACE])  # nothing earlier matched: the recording as it is


def test_noise_estimate_follows_the_noise_not_the_edges():
    scene = _scene()
    for sigma in (2.0, 5.0, 10.0):
        noisy = scene + np.random.default_rng(0).normal(0, sigma, scene.shape)
        assert noise_sigma(noisy) == pytest.approx(sigma, rel=0.3)
    assert noise_sigma(scene) < 1.5  # a clean textured scene is not taken for noise


@pytest.fixture
def backend(make_artifact):
    with create_backend("onnxruntime", load_artifact(make_artifact("m", mode="linear")), providers=CPU) as backend:
        yield backend


@pytest.mark.parametrize("fuse_frames", [0, 1])
def test_with_fusion_off_the_output_is_what_it_was(backend, fuse_frames):
    frames, _ = _camera(_scene(), [(0.3 * i, 0.0) for i in range(6)], noise=4.0)
    views = {}
    for setting in (None, fuse_frames, 4):
        config = EnhanceConfig(enhance_all=True, show_fps=False, **({} if setting is None else
                                                                     {"fuse_frames": setting}))
        lane = Lane(ListSource([(ReadStatus.OK, f) for f in frames]), ListSink(),
                    Enhancer(backend, FakeDetector([det(60, 40, 30)]), config))
        run_lanes(lane)
        views[setting] = lane.sink.views
    for got, want in zip(views[fuse_frames], views[None], strict=True):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(views[4], views[None]))  # fusion does change faces


def test_noise_that_blur_hides_from_the_window_is_read_off_the_frames_differences():
    """A blurred noisy recording looks quieter than it is to the 3x3 mask; its frames still differ by the noise."""
    from runtime.fusion import TEMPORAL_NOISE_CAP, window_noise

    rng = np.random.default_rng(3)
    scene = _scene()
    frames = [cv2.GaussianBlur(scene + rng.normal(0, 8, scene.shape), (0, 0), 0.8).astype(np.float32)
              for _ in range(4)]
    face = (slice(40, 70), slice(60, 90))
    spatial = noise_sigma(frames[0])
    raised = window_noise(frames[0], [frame[face] - frames[0][face] for frame in frames[1:]])
    assert spatial < raised <= TEMPORAL_NOISE_CAP * spatial
    assert window_noise(frames[0], [np.zeros((30, 30), np.float32)]) == spatial  # frames that agree never lower it


def test_with_fusion_on_a_still_face_is_steadied_and_counted(backend):
    frames, _ = _camera(_scene(), [(0.0, 0.0)] * 6, noise=6.0)
    shown = {}
    for steadied in (False, True):
        enhancer = Enhancer(backend, FakeDetector([det(60, 40, 30)]),
                            EnhanceConfig(enhance_all=True, show_fps=False, fuse_frames=4))
        if not steadied:
            enhancer.steady.apply = lambda faces, still=None: faces  # the same run without steady faces
        results = []
        sink = ListSink()
        sink.write = lambda view, result=None: results.append(result)
        run_lanes(Lane(ListSource([(ReadStatus.OK, f) for f in frames]), sink, enhancer))
        shown[steadied] = [face.sr.astype(np.float32) for result in results for face in result.faces]
    change = {k: np.mean([np.abs(b - a).mean() for a, b in zip(v[1:], v[2:])]) for k, v in shown.items()}
    assert change[True] < 0.5 * change[False]
    assert enhancer.steady.blended == enhancer.steady.offered == 5


def test_a_face_is_still_when_most_earlier_frames_it_was_offered_registered():
    fusion = TemporalFusion(8)
    fusion.looked_at = 7
    assert [fusion.still(n) for n in (0, 1, 3, 4, 7)] == [False, False, False, True, True]
    fusion.looked_at = 1  # the second frame of a clip: the one earlier frame has to register
    assert not fusion.still(0) and fusion.still(1)
