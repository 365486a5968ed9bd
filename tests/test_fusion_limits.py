"""benchmarks.fusion_limits: shift and add really uses the burst's sub-pixel positions; the report's rows share
one baseline per face size."""
import json

import cv2
import numpy as np

from benchmarks.fusion_limits import FILMINGS, TILE, shift_and_add, tile_of


def stripes(side: int, shift_x: float = 0.0, shift_y: float = 0.0) -> np.ndarray:
    """Fine diagonal stripes that an LR grid half as fine aliases, over smooth blobs to register on."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    x, y = x - shift_x, y - shift_y
    blobs = sum(70 * np.exp(-((x - cx * side) ** 2 + (y - cy * side) ** 2) / (2 * (side / 10) ** 2))
                for cx, cy in ((0.4, 0.4), (0.62, 0.45), (0.5, 0.65)))
    grey = 80 + blobs + 12 * np.sin(2 * np.pi * (x + 0.6 * y) / 3.1)
    return np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_shift_and_add_recovers_detail_that_one_frame_aliases():
    fine, side = 2 * 2 * TILE, 2 * TILE  # the window's fine grid (2x) and its LR side
    shifts = [(0, 0), (1, 0), (0, 1), (1, 1)]  # fine px: half an LR pixel
    burst = [cv2.resize(stripes(fine, dx, dy), (side, side), interpolation=cv2.INTER_AREA) for dx, dy in shifts]
    truth = tile_of(cv2.blur(stripes(fine), (2, 2)))  # what a 2x finer sensor of the same aperture records

    def error(image):
        return float(np.abs(image.astype(np.float64) - truth).mean())

    added = tile_of(shift_and_add(burst, TILE))
    one_frame = tile_of(cv2.resize(burst[0], (fine, fine), interpolation=cv2.INTER_CUBIC))
    assert error(added) < 0.7 * error(one_frame)
    single = tile_of(shift_and_add(burst[:1], TILE))  # one frame: no more than its own samples
    assert error(single) > 0.9 * error(one_frame)


def test_quick_report_has_every_filming_over_one_baseline_per_face_size(tmp_path, shared_dir):
    from benchmarks.fusion_limits import main

    assert main(["--quick", "--outdir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "fusion_limits.json").read_text())
    rows = payload["rows"]
    assert [r["filming"] for r in rows] == [f.label for f in FILMINGS]
    for size in {r["face_px"] for r in rows}:  # the same cameras: one bicubic of the recorded frame per size
        assert len({r["bicubic_db"] for r in rows if r["face_px"] == size}) == 1
    assert all(abs(r["gain_db"] - (r["model_db"] - r["bicubic_db"])) < 1e-9 for r in rows)
    assert "Shift and add" in (tmp_path / "fusion_limits.md").read_text()
