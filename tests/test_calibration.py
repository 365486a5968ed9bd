"""calibration: collected sets (.npz with content hash), sources, and TensorRT's legacy cache format."""
import struct

import numpy as np
import pytest

from calibration import CalibrationError, StaleCacheError, check_array, content_hash, load_set, save_set
from calibration.cache import format_cache, parse_cache, read_cache, scale_from_amax, sidecar, write_cache
from calibration.collect import collect, main
from runtime.frames import hwc_uint8_to_nchw
from runtime.shared_data import split_names, utk_dir
from training.data import decode_pair

needs_utk = pytest.mark.skipif(utk_dir() is None, reason="../shared/data/faces-utk not found")


def _set(n=40, seed=0):
    return np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32)


# --- sets ---------------------------------------------------------------------------------------


def test_save_load_roundtrip_with_hash(tmp_path):
    lr = _set()
    meta = save_set(tmp_path / "c.npz", lr, "unit test")
    data, description = load_set(tmp_path / "c.npz")
    assert np.array_equal(data["lr"], lr) and data["source"] == "unit test"
    import hashlib
    assert meta["sha256"] == data["sha256"] == hashlib.sha256(lr.tobytes()).hexdigest() == content_hash(lr)
    assert "40 faces" in description


@pytest.mark.parametrize("array, message", [
    (np.zeros((40, 16, 16, 3), np.float32), r"shape \(40, 16, 16, 3\), expected \[N, 3, S, S\]"),
    (np.zeros((40, 3, 16, 16), np.float64), "dtype float64"),
    (np.zeros((5, 3, 16, 16), np.float32), "received 5 inputs, expected at least 32"),
    (np.full((40, 3, 16, 16), 255, np.float32), r"within \[0, 1\]"),
])
def test_bad_sets_are_rejected(array, message):
    with pytest.raises(CalibrationError, match=message):
        check_array(array)


def test_corrupted_set_files(tmp_path):
    path = tmp_path / "c.npz"
    save_set(path, _set(), "x")
    with np.load(path) as npz:
        items = {k: npz[k] for k in npz.files}
    items["lr"] = items["lr"].copy()
    items["lr"][0, 0, 0, 0] = 0.123
    np.savez(tmp_path / "tampered.npz", **items)
    with pytest.raises(CalibrationError, match="is corrupted: content sha256"):
        load_set(tmp_path / "tampered.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="not a readable .npz"):
        load_set(tmp_path / "junk.npz")
    with pytest.raises(CalibrationError, match="not found"):
        load_set(tmp_path / "missing.npz")


@needs_utk
def test_utk_source_uses_pair_convention():
    lr, source = collect("faces-utk:val", 3)
    assert lr.shape == (3, 3, 16, 16) and lr.dtype == np.float32 and "faces-utk/val[:3]" in source
    first = split_names(utk_dir(), "val", 1)[0]
    assert np.array_equal(lr[0], hwc_uint8_to_nchw(decode_pair(utk_dir() / "images" / first)[1]))
    lr32, _ = collect("faces-utk:val", 2, input_size=32)  # a model with a 32 px input gets 32 px faces
    assert lr32.shape == (2, 3, 32, 32)
    with pytest.raises(CalibrationError, match="unknown split 'dev'"):
        collect("faces-utk:dev", 3)


def test_video_source_detects_and_frames_faces(shared_dir, tmp_path):
    from runtime.constants import FRAMING_SCALE

    out = tmp_path / "v.npz"
    rc = main(["--source", str(shared_dir / "data/scenes/street-video-1080p.mp4"), "--out", str(out),
               "--count", "40", "--frame-step", "5"])
    assert rc == 0
    data, _ = load_set(out)
    lr = data["lr"]
    assert lr.shape == (40, 3, 16, 16) and 0 <= lr.min() and lr.max() <= 1
    assert f"framing scale {FRAMING_SCALE}" in data["source"] and lr.std() > 0.05


def test_image_folder_without_faces_is_a_clear_error(shared_dir, tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "grey.png"), np.full((64, 64, 3), 128, np.uint8))
    with pytest.raises(CalibrationError, match="no faces of >= 16 px found in 1 frames"):
        collect(str(tmp_path), 10)
    with pytest.raises(CalibrationError, match="expected faces-utk"):
        collect(str(tmp_path / "nothing.txt"), 10)


# --- legacy TensorRT cache ------------------------------------------------------------------------


def test_cache_writer_matches_struct_pack():
    amax = {"lr": 1.0, "conv1_out": 6.35, "sr": 0.999}
    scales = {k: scale_from_amax(v) for k, v in amax.items()}
    text = format_cache(scales, 8601)
    lines = text.splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    for line, (name, amax_value) in zip(lines[1:], amax.items()):
        assert line == f"{name}: {struct.pack('>f', amax_value / 127).hex()}"
    assert lines[1] == "lr: 3c010204"  # 1/127 as big-endian float32
    header, parsed = parse_cache(text)
    assert header == lines[0]
    assert parsed == {k: pytest.approx(v, rel=1e-7) for k, v in scales.items()}


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("TRT-8601-Whatever\nlr: 3c010204\n", "not a TensorRT cache header"),
    ("TRT-8601-EntropyCalibration2\nlr: 3c0102\n", "line 2"),
    ("TRT-8601-EntropyCalibration2\n", "no tensor scales"),
    ("TRT-8601-EntropyCalibration2\nlr: 7fc00000\n", "invalid"),  # NaN
    (b"\x89PNG\x00\x01", "binary data"),
])
def test_corrupted_cache_is_a_clear_error(text, message):
    with pytest.raises(CalibrationError, match=message):
        parse_cache(text)


def test_cache_from_another_model_is_stale(tmp_path):
    path = tmp_path / "calib.cache"
    assert read_cache(path, "m1", "s1") is None
    text = format_cache({"lr": 1 / 127}, 100300)
    write_cache(path, text, "m1", "s1")
    assert read_cache(path, "m1", "s1") == text.encode()
    with pytest.raises(StaleCacheError, match="another model"):
        read_cache(path, "m2", "s1")
    with pytest.raises(StaleCacheError):
        read_cache(path, "m1", "s2")
    sidecar(path).unlink()
    with pytest.raises(StaleCacheError, match="no readable sidecar"):
        read_cache(path, "m1", "s1")
    with pytest.raises(CalibrationError):
        write_cache(path, "garbage", "m1", "s1")


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "--count 0: expected a positive number"),
    (["--count", "-5"], "--count -5: expected a positive number"),
    (["--input-size", "0"], "--input-size 0: expected a positive integer"),
    (["--frame-step", "-1"], "--frame-step -1: expected a positive integer"),
])
def test_numeric_arguments_are_validated(tmp_path, caplog, args, message):
    assert main(["--out", str(tmp_path / "c.npz"), *args]) == 2
    assert message in caplog.text and not (tmp_path / "c.npz").exists()
