"""Landmarks out of the runtime: a DIC exported --with-landmarks gives 68 points per enhanced face, in frame
pixels, in the events; --draw-landmarks marks them on the view."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from runtime.compose import EnhancedFace, mark_landmarks
from runtime.enhance import main
from runtime.faces import Square

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def landmark_artifact(tmp_path_factory, tiny_weights):
    from export.build import build

    return build("dic", weights=str(tiny_weights), steps=2, with_landmarks=True,
                 outdir=tmp_path_factory.mktemp("lm")).manifest_path


def test_landmarks_map_from_the_sr_image_to_the_frame():
    sr = np.zeros((128, 128, 3), np.uint8)
    face = EnhancedFace(1, (0, 0, 10, 10), Square(100, 50, 64), None, sr,
                        landmarks=np.array([[0.0, 0.0], [127.0, 127.0], [63.5, 63.5]], np.float32))
    points = face.landmarks_in_frame()
    # pixel centres: SR pixel 0 covers frame [100, 100.5), its centre 100.25 - 0.5 ... at half scale
    np.testing.assert_allclose(points, [[99.75, 49.75], [163.25, 113.25], [131.5, 81.5]], atol=1e-5)
    unenhanced = EnhancedFace(1, (0, 0, 10, 10), Square(0, 0, 64), None, None, landmarks=None)
    assert unenhanced.landmarks_in_frame() is None and mark_landmarks(unenhanced) is unenhanced


def test_marked_face_has_dots_and_the_original_is_untouched():
    sr = np.zeros((128, 128, 3), np.uint8)
    face = EnhancedFace(1, (0, 0, 10, 10), Square(0, 0, 128), None, sr, landmarks=np.array([[40.0, 60.0]]))
    marked = mark_landmarks(face)
    assert marked.sr[60, 40].any() and not face.sr.any()


def test_events_carry_68_points_inside_each_face_and_drawing_changes_the_view(
        tmp_path, shared_dir, detector_path, landmark_artifact):
    photo = shared_dir / "data" / "scenes" / "group-6faces.jpg"
    runs = {}
    for name, extra in (("plain", []), ("drawn", ["--draw-landmarks"])):
        out, events = tmp_path / name, tmp_path / f"{name}.jsonl"  # an image source writes into a folder
        code = main(["--source", str(photo), "--model", str(landmark_artifact), "--output", str(out),
                     "--events", str(events), "--upscale", "2", "--enhance-all", "--headless",
                     "--detector-model", str(detector_path), *extra])
        assert code == 0
        (written,) = out.iterdir()
        runs[name] = (cv2.imread(str(written)), [json.loads(line) for line in events.read_text().splitlines()])
    plain, records = runs["plain"]
    assert records and all(r["enhanced"] for r in records)
    for record in records:
        points = np.array(record["landmarks"])
        x, y, w, h = record["box"]
        assert points.shape == (68, 2)
        # the model's square frames the face box with margin: every point lies within 2 box sizes of its centre
        centre = np.array([x + w / 2, y + h / 2])
        assert np.abs(points - centre).max() <= 2 * max(w, h)
    drawn = runs["drawn"][0]
    assert drawn.shape == plain.shape and (drawn != plain).any()


def test_draw_landmarks_without_a_landmark_model_is_a_clear_error(tmp_path, shared_dir, detector_path, sr_artifact,
                                                                   caplog):
    photo = shared_dir / "data" / "scenes" / "group-6faces.jpg"
    code = main(["--source", str(photo), "--model", str(sr_artifact), "--output", str(tmp_path / "out"),
                 "--draw-landmarks", "--headless", "--detector-model", str(detector_path)])
    assert code == 2 and "--with-landmarks" in caplog.text
