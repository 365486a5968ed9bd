"""Steady faces (`runtime.steady`, on with --fuse-frames): a still face's enhanced output is blended with its
previous one, so it stops shimmering; a face that moved is registered first; one that changed is left alone."""
from __future__ import annotations

import cv2
import numpy as np

from runtime.compose import EnhancedFace
from runtime.faces import Square
from runtime.steady import SteadyFaces, steady

SIDE = 64  # output px of the faces below; their square is 8 frame px (x8)


def _face_image(seed=0, dx=0.0, dy=0.0):
    """A smooth textured 'face' (BGR float), moved by (dx, dy) output px."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(30, 225, (SIDE // 8, SIDE // 8)).astype(np.float32)
    image = cv2.resize(coarse, (SIDE, SIDE), interpolation=cv2.INTER_CUBIC)
    image = cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (SIDE, SIDE), flags=cv2.INTER_CUBIC,
                           borderMode=cv2.BORDER_REFLECT)
    return np.repeat(image[..., None], 3, axis=2)


def _enhanced(image, x=100.0, y=50.0, track=1, side=8.0):
    sr = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return EnhancedFace(track, (x, y, side, side), Square(x, y, side), None, sr)


def _interior(image):
    return image[8:-8, 8:-8].astype(np.float32)


def test_a_still_face_stops_shimmering():
    truth = _face_image()
    rng = np.random.default_rng(5)
    shimmering = [truth + rng.normal(0, 4.0, truth.shape) for _ in range(12)]
    steadier = SteadyFaces()
    shown = [steadier.apply([_enhanced(image)])[0].sr for image in shimmering]
    raw_change = np.mean([np.abs(_interior(b) - _interior(a)).mean()
                          for a, b in zip(shimmering[4:], shimmering[5:])])
    shown_change = np.mean([np.abs(_interior(b) - _interior(a)).mean() for a, b in zip(shown[4:], shown[5:])])
    assert shown_change < 0.7 * raw_change
    error = np.mean([np.abs(_interior(s) - _interior(truth)).mean() for s in shown[4:]])
    raw_error = np.mean([np.abs(_interior(s) - _interior(truth)).mean() for s in shimmering[4:]])
    assert error < raw_error  # steadier and closer to the face, not smeared
    assert steadier.blended == 11 and steadier.offered == 11


def test_a_moving_face_is_registered_before_blending():
    # the face moves 3 output px between frames while its square stays: blending unregistered would ghost
    previous, current = _enhanced(_face_image(dx=0.0)), _enhanced(_face_image(dx=3.0))
    blended = steady(current, previous)
    assert blended is not None
    assert np.abs(_interior(blended) - _interior(current.sr)).mean() < 1.0


def test_the_square_that_moved_with_the_face_places_the_previous_output():
    # the square followed the face by 0.25 frame px (2 output px): the face sits still inside it
    previous = _enhanced(_face_image(dx=0.0), x=100.0)
    current = _enhanced(_face_image(dx=0.0), x=100.25)
    blended = steady(current, previous)
    assert blended is not None
    assert np.abs(_interior(blended) - _interior(current.sr)).mean() < 1.0


def test_a_face_that_changed_is_left_as_it_is():
    before, after = _enhanced(_face_image(seed=1)), _enhanced(_face_image(seed=2))
    assert steady(after, before) is None
    steadier = SteadyFaces()
    steadier.apply([before])
    assert np.array_equal(steadier.apply([after])[0].sr, after.sr)


def test_a_track_that_left_starts_afresh():
    steadier = SteadyFaces()
    steadier.apply([_enhanced(_face_image(), track=1)])
    steadier.apply([_enhanced(_face_image(), track=2)])  # track 1 not in this frame: forgotten
    face = _enhanced(_face_image(seed=0) + 10.0, track=1)
    assert np.array_equal(steadier.apply([face])[0].sr, face.sr)
    assert steadier.offered == 0


def test_faces_kept_at_the_recording_pass_through():
    kept = EnhancedFace(1, (0, 0, 8, 8), Square(0, 0, 8), None, None, route="kept")
    steadier = SteadyFaces()
    assert steadier.apply([kept]) == [kept]
    assert steadier.last == {}


def test_a_face_fusion_did_not_find_still_is_not_blended():
    # the runtime passes still = "fusion averaged at least one earlier frame into this face": a walking person's
    # face changes pose from frame to frame and would blur
    steadier = SteadyFaces()
    steadier.apply([_enhanced(_face_image())])
    face = _enhanced(_face_image() + 3.0)
    assert np.array_equal(steadier.apply([face], still=[False])[0].sr, face.sr)
    assert steadier.offered == 0
    assert steadier.last[1] is face  # ... but it is what the next frame blends with
