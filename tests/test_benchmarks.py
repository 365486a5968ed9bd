"""The benchmark commands' quick modes run and write their reports (numbers are not asserted)."""
import json

import pytest

from benchmarks.common import summarize
from benchmarks.speed import main as speed_main


def test_summarize_statistics():
    stats = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert stats == {"median_ms": 3.0, "p95_ms": 5.0, "min_ms": 1.0, "runs": 5}


def test_flops_of_the_paper_config():
    import torch

    from benchmarks.speed import flops_per_face
    from models.dic import DIC

    with torch.device("meta"):
        model = DIC()
    # 90.7 GFLOP per face with the last landmark pass; the exported graph without it is 84.9.
    assert flops_per_face(model, 4, landmarks=True) / 1e9 == pytest.approx(90.67, abs=0.01)
    assert flops_per_face(model, 4) / 1e9 == pytest.approx(84.92, abs=0.01)


def test_speed_quick_writes_reports(tmp_path, capsys):
    assert speed_main(["--quick", "--repeats", "2", "--batches", "1,2", "--outdir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "speed.json").read_text())
    backends = {row["backend"] for row in payload["rows"]}
    assert {"torch-cpu", "onnxruntime-cpu"} <= backends
    assert len(payload["rows"]) == 2 * len(backends)
    for row in payload["rows"]:
        assert row["median_ms"] > 0 and row["faces_per_s"] > 0
        assert row["gflop_per_face"] > 1.0  # the tiny DIC config is ~1.6 GFLOP per face at 3 steps
    assert {r["batch"] for r in payload["ratios"]} == {1, 2}
    assert "| onnxruntime-cpu | fp32 |" in (tmp_path / "speed.md").read_text()
    assert (tmp_path / "speed.png").stat().st_size > 1000
