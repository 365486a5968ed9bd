"""End to end on the shared scenes: the street video, the group photos, the CLI and its error messages.

Needs ../shared (skipped without it). Uses the tiny Resize 'SR models' from conftest, so it checks the
runtime, not a network's quality.
"""
import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import assets
from runtime.artifact import load_artifact
from runtime.backends import create_backend
from runtime.constants import FRAMING_OFFSET, FRAMING_SCALE
from runtime.detect import Detection, FaceDetector, box_size
from runtime.enhance import main
from runtime.errors import AssetError
from runtime.measure_framing import measure
from runtime.pipeline import EnhanceConfig, Enhancer
from runtime.track import iou

pytestmark = pytest.mark.shared
STREET_FRAMES = 105


@pytest.fixture(scope="module")
def street(shared_dir):
    return shared_dir / "data" / "scenes" / "street-video-1080p.mp4"


@pytest.fixture(scope="module")
def street_frames(street):
    capture = cv2.VideoCapture(str(street))
    frames = [capture.read()[1] for _ in range(8)]
    capture.release()
    return frames


def _cli(*args, detector=None):
    argv = [str(a) for a in args] + ["--headless"]
    if detector is not None:
        argv += ["--detector-model", str(detector)]
    return main(argv)


def test_street_frame0_finds_most_faces(detector_path, street_frames):
    faces = FaceDetector(detector_path).detect(street_frames[0])
    assert street_frames[0].shape == (1080, 1920, 3)
    assert len(faces) >= 7
    assert min(box_size(f.box) for f in faces) < 30  # the ~21 px face is found despite the downscale


def test_small_faces_get_tighter_boxes_from_refinement(shared_dir, detector_path):
    photo = cv2.imread(str(shared_dir / "data/scenes/group-6faces.jpg"))
    truth = [d.box for d in FaceDetector(detector_path, max_side=100_000).detect(photo) if d.score >= 0.9]
    small = cv2.resize(photo, (photo.shape[1] // 8, photo.shape[0] // 8), interpolation=cv2.INTER_AREA)  # ~10 px faces

    def framing_error(detector) -> float:
        errors = []
        for box in truth:
            want = [v / 8 for v in box]
            found = max(detector.detect(small), key=lambda d: iou(d.box, want))
            assert iou(found.box, want) > 0.3
            centre = [(found.box[i] + found.box[i + 2] / 2) - (want[i] + want[i + 2] / 2) for i in (0, 1)]
            errors.append(np.hypot(*centre) / box_size(want) + abs(np.log(box_size(found.box) / box_size(want))))
        return float(np.mean(errors))

    plain = framing_error(FaceDetector(detector_path, min_face_px=9.6, refine_below_px=0))
    refined = framing_error(FaceDetector(detector_path, min_face_px=9.6))
    assert refined < 0.7 * plain, (refined, plain)


def test_refinement_without_a_match_keeps_the_detection(detector_path):
    detection = Detection(box=(20.0, 30.0, 12.0, 13.0), score=0.8, landmarks=((24.0, 34.0),))
    assert FaceDetector(detector_path)._refined(np.zeros((80, 90, 3), np.uint8), detection) == detection


def test_street_tracks_keep_their_ids(detector_path, street_frames, make_artifact):
    artifact = load_artifact(make_artifact("m", mode="linear"))
    with create_backend("onnxruntime", artifact, providers=["CPUExecutionProvider"]) as backend:
        enhancer = Enhancer(backend, FaceDetector(detector_path), EnhanceConfig(detect_every=1))
        results = [enhancer.process(frame, i) for i, frame in enumerate(street_frames)]
    pairs = 0
    for previous, current in zip(results, results[1:]):
        for face in current.faces:
            same = [p for p in previous.faces if iou(p.box, face.box) > 0.5]
            if same:
                pairs += 1
                assert same[0].track_id == face.track_id, f"frame {current.index}: face changed its id"
    assert pairs >= 7 * (len(results) - 1)  # most faces are followed frame to frame
    assert len(results[0].faces) >= 7


def test_full_street_video(tmp_path, street, detector_path, fast_sr_artifact):
    out, crops, events, summary_path = (tmp_path / "out.mp4", tmp_path / "crops", tmp_path / "events.jsonl",
                                        tmp_path / "summary.json")
    code = _cli("--source", street, "--model", fast_sr_artifact, "--backend", "onnxruntime", "--output", out,
                "--detect-every", "3", "--save-crops", crops, "--events", events, "--summary", summary_path,
                detector=detector_path)
    assert code == 0
    capture = cv2.VideoCapture(str(out))
    written = 0
    while capture.read()[0]:
        written += 1
    assert written == STREET_FRAMES
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (1920, 1080)
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == STREET_FRAMES and summary["faces"] >= 5 * STREET_FRAMES
    assert summary["stages_ms"]["detect"]["frames"] == STREET_FRAMES
    assert all(summary["stages_ms"][s]["mean_ms"] > 0 for s in ("decode", "detect", "sr", "compose", "encode"))
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert len(records) == summary["faces"]
    # a face counts once confirmed by 3 detections (every 3rd frame): from frame 6 on, every frame has faces
    assert {r["frame"] for r in records} == set(range(6, STREET_FRAMES))
    saved = sorted(crops.glob("track_*.png"))
    assert len(saved) == summary["tracks"] == len({r["track"] for r in records})
    assert all(r["crop"] and (crops / r["crop"].rsplit("/", 1)[1]).is_file() for r in records)
    assert cv2.imread(str(saved[0])).shape == (128, 128, 3)


@pytest.mark.parametrize("view, extra, shape", [
    ("overlay", ["--upscale", "2"], (2160, 3840, 3)),
    ("gallery", [], (1080 + 216, 1920, 3)),
    ("side-by-side", ["--max-faces", "8"], (32 + 2 * 128, 4 * 2 * 128, 3)),
])
def test_each_view_renders(tmp_path, street, detector_path, fast_sr_artifact, view, extra, shape):
    out = tmp_path / "frames"
    code = _cli("--source", street, "--model", fast_sr_artifact, "--output", out, "--view", view,
                "--max-frames", "2", *extra, detector=detector_path)
    assert code == 0
    images = sorted(out.glob("frame_*.jpg"))
    assert len(images) == 2
    image = cv2.imread(str(images[0]))
    assert image.shape == shape and image.std() > 5


def test_image_folder_source(tmp_path, shared_dir, detector_path, sr_artifact):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("group-6faces.jpg", "group-4faces-small.png"):
        shutil.copy(shared_dir / "data" / "scenes" / name, folder / name)
    out, events, summary_path = tmp_path / "out", tmp_path / "events.jsonl", tmp_path / "summary.json"
    code = _cli("--source", folder, "--model", sr_artifact, "--output", out, "--events", events,
                "--summary", summary_path, detector=detector_path)
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 2 and summary["faces"] >= 9  # 4 + 6 faces, the 21 px one may be missed
    per_frame = [sum(json.loads(line)["frame"] == i for line in events.read_text().splitlines()) for i in (0, 1)]
    assert per_frame[0] >= 3 and per_frame[1] == 6  # sorted by name: group-4faces-small.png first
    shapes = [cv2.imread(str(p)).shape for p in sorted(out.glob("frame_*.jpg"))]
    assert shapes == [(1146, 783, 3), (630, 1200, 3)]


def test_self_ensemble_runs_each_batch_mirrored_too(tmp_path, shared_dir, detector_path, fast_sr_artifact):
    summary_path = tmp_path / "summary.json"
    code = _cli("--source", shared_dir / "data/scenes/group-6faces.jpg", "--model", fast_sr_artifact,
                "--upscale", "2", "--enhance-all", "--self-ensemble", "--summary", summary_path, detector=detector_path)
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary["backends"] == ["onnxruntime+mirror"] and summary["faces_enhanced"] == 6


def test_min_face_skips_and_counts(tmp_path, shared_dir, detector_path, sr_artifact):
    summary_path = tmp_path / "summary.json"
    code = _cli("--source", shared_dir / "data/scenes/group-4faces-small.png", "--model", sr_artifact,
                "--min-face", "80", "--summary", summary_path, detector=detector_path)
    assert code == 0
    summary = json.loads(summary_path.read_text())
    assert summary["skipped_tiny_faces"] == 1 and summary["faces"] == 2  # the 76 px face is below 80


def test_in_a_photo_the_banister_knob_is_not_a_face(tmp_path, shared_dir, detector_path, sr_artifact):
    """Against hand labels (tests/data/group4_faces.json): the three faces are enhanced, the knob YuNet scores
    0.69 is not (stills confirm with a second look, as videos confirm over frames)."""
    from runtime import FaceSR
    from runtime.track import iou

    labels = json.loads((Path(__file__).parent / "data" / "group4_faces.json").read_text())
    frame = cv2.imread(str(shared_dir / labels["image"]))
    with FaceSR(str(sr_artifact), detector=str(detector_path), enhance_all=True) as sr:
        faces = sr(frame).faces
    assert len(faces) == 3 and all(face.sr is not None for face in faces)
    assert all(any(iou(face.box, box) >= 0.5 for face in faces) for box in labels["faces"])
    assert not any(iou(face.box, item["box"]) > 0 for face in faces for item in labels["not_faces"])
    events = tmp_path / "events.jsonl"
    code = _cli("--source", shared_dir / labels["image"], "--model", sr_artifact, "--upscale", "2", "--enhance-all",
                "--events", events, detector=detector_path)
    assert code == 0 and len(events.read_text().splitlines()) == 3


# --- errors a user sees ----------------------------------------------------------------------------------------
def test_missing_detector_names_both_options(tmp_path, monkeypatch, caplog, sr_artifact, shared_dir):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    code = _cli("--source", shared_dir / "data/scenes/group-6faces.jpg", "--model", sr_artifact)
    assert code == 2
    assert "python -m runtime.assets fetch" in caplog.text and "--detector-model" in caplog.text
    assert str(tmp_path / "empty-cache" / "fsr-edge") in caplog.text


def test_unreadable_source_and_corrupt_model_are_clear(tmp_path, caplog, sr_artifact, corrupt_onnx, detector_path,
                                                       shared_dir):
    assert _cli("--source", tmp_path / "missing.mp4", "--model", sr_artifact, detector=detector_path) == 2
    assert f"video file {tmp_path / 'missing.mp4'} does not exist" in caplog.text
    caplog.clear()
    image = shared_dir / "data/scenes/group-6faces.jpg"
    assert _cli("--source", image, "--model", corrupt_onnx, detector=detector_path) == 2
    assert f"ONNX Runtime cannot load {corrupt_onnx}" in caplog.text
    caplog.clear()
    bad_detector = tmp_path / "yunet.onnx"
    bad_detector.write_bytes(b"garbage")
    assert _cli("--source", image, "--model", sr_artifact, detector=bad_detector) == 2
    assert "cannot load the face detector" in caplog.text


# --- assets and framing -----------------------------------------------------------------------------------------
def test_fetch_verifies_the_checksum(tmp_path, detector_path, caplog):
    url = detector_path.resolve().as_uri()  # file:// URL: no network in tests
    dest = assets.fetch(url=url, dest=tmp_path / "cache" / assets.DETECTOR_FILE)
    assert assets.sha256_of(dest) == assets.DETECTOR_SHA256
    with caplog.at_level(logging.INFO):
        assert assets.fetch(url="file:///nonexistent", dest=dest) == dest  # verified copy kept, no download
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"tampered")
    with pytest.raises(AssetError, match="has sha256 .* expected 8f2383e4"):
        assets.fetch(url=bad.as_uri(), dest=tmp_path / "other" / "y.onnx")
    assert list((tmp_path / "other").iterdir()) == []  # nothing left behind
    with pytest.raises(AssetError, match="download of .* failed"):
        assets.fetch(url="file:///nonexistent", dest=tmp_path / "z.onnx", force=True)


def test_measured_framing_constant_matches_a_fresh_sample(shared_dir, detector_path):
    from runtime.shared_data import split_names, utk_dir

    utk = utk_dir()
    if utk is None:
        pytest.skip("UTKFace crops not available")
    names = split_names(utk, "val", 30)
    result = measure([utk / "images" / n for n in names], FaceDetector(detector_path), pad=100)
    assert result["detected"] >= 28
    assert result["scale_median"] == pytest.approx(FRAMING_SCALE, rel=0.05)
    assert result["offset_median"][1] == pytest.approx(FRAMING_OFFSET[1], abs=0.04)


def test_a_run_that_enhances_no_face_says_why_and_what_would(tmp_path, shared_dir, detector_path, sr_artifact,
                                                             caplog):
    """The street video with only a x8 model at --upscale 1: every face is shown at its recorded size, so none is
    enhanced; the summary counts them by reason and one warning says what would enhance them."""
    summary_path = tmp_path / "summary.json"
    with caplog.at_level(logging.INFO):
        code = _cli("--source", shared_dir / "data/scenes/street-video-1080p.mp4", "--model", sr_artifact,
                    "--max-frames", "6", "--summary", summary_path, detector=detector_path)
    summary = json.loads(summary_path.read_text())
    assert code == 0 and summary["faces"] > 0 and summary["faces_enhanced"] == 0
    assert summary["faces_kept"] == {"shown at or below their recorded size": summary["faces"]}
    assert "--upscale 8" in summary["to_enhance_kept_faces"]["shown at or below their recorded size"]
    why = [r for r in caplog.records if r.levelno == logging.WARNING and "kept as recorded" in r.getMessage()]
    assert len(why) == 1 and "--upscale 8" in why[0].getMessage()
    assert not any("asked for" in r.getMessage() for r in caplog.records)  # the user asked for no face size


def test_kept_faces_are_counted_by_reason_with_the_advice_for_each():
    from runtime.routing import KEPT, ModelFit, kept_summary, route

    x8 = ModelFit.for_sides(16, 128)
    assert route(40, 40, [x8]).kind == "display"
    assert route(100, 400, [x8]).kind == "crossover"
    assert route(12, 48, [x8]).kind == "magnification"
    assert route(12, 96, [x8]).kind == ""  # enhanced
    line = kept_summary({"display": 3, "magnification": 2})
    assert line.startswith("3 shown at or below their recorded size") and KEPT["magnification"][1] in line
