"""The benchmark commands' quick modes run and write their reports (numbers are not asserted)."""
import json

import numpy as np
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
    payload = json.loads((tmp_path / "speed_dic_tiny.json").read_text())
    backends = {row["backend"] for row in payload["rows"]}
    assert {"torch-cpu", "onnxruntime-cpu"} <= backends
    assert len(payload["rows"]) == 2 * len(backends)
    for row in payload["rows"]:
        assert row["median_ms"] > 0 and row["faces_per_s"] > 0
        assert row["gflop_per_face"] > 1.0  # the tiny DIC config is ~1.6 GFLOP per face at 3 steps
    assert {r["batch"] for r in payload["ratios"]} == {1, 2}
    assert "| onnxruntime-cpu | fp32 |" in (tmp_path / "speed_dic_tiny.md").read_text()
    assert (tmp_path / "speed_dic_tiny.png").stat().st_size > 1000


def test_quality_quick_reports_bicubic_and_onnx(tmp_path, capsys):
    from export.build import build
    from runtime.shared_data import utk_dir
    from benchmarks.quality import main as quality_main

    if utk_dir() is None:
        pytest.skip("../shared/data/faces-utk not found")
    artifacts = tmp_path / "artifacts"
    build("dic", random_init=True, config="tiny", steps=1, outdir=artifacts)
    assert quality_main(["--quick", "--artifacts", str(artifacts), "--outdir", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "quality.json").read_text())
    methods = {row["method"]: row for row in payload["rows"]}
    assert payload["images"] == 50
    assert 23.0 < methods["bicubic from 16 px"]["psnr"] < 25.5  # 24.12 dB on the whole test split
    onnx_row = methods["onnx dic_s1_fp32"]
    assert onnx_row["precision"] == "fp32" and onnx_row["steps"] == 1 and np.isfinite(onnx_row["psnr"])
    assert "| bicubic from 16 px |" in (tmp_path / "quality.md").read_text()


def test_pipeline_quick_reports_stages(tmp_path, capsys):
    from runtime.shared_data import shared_dir
    from benchmarks.pipeline import main as pipeline_main

    root = shared_dir()
    if root is None or not (root / "data/scenes/street-video-1080p.mp4").is_file():
        pytest.skip("../shared street video not found")
    assert pipeline_main(["--quick", "--frames", "9", "--outdir", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("pipeline_*.json")
    result = json.loads(report.read_text())["result"]
    # faces count once confirmed (3 detections, every 3rd frame): frames 6-8 of the street video, ~8 faces each
    assert result["frames"] == 9 and result["faces"] >= 7 * 3
    assert {"decode", "detect", "prepare", "sr", "compose"} <= set(result["stages_ms"])
    assert 0.0 < result["outside_network_share"] < 1.0
    assert result["peak_rss_mb"] > 0


def test_pipeline_compare_runs_the_cli_every_way_with_the_same_work(tmp_path):
    from runtime.shared_data import shared_dir
    from benchmarks.pipeline import main as pipeline_main

    root = shared_dir()
    if root is None or not (root / "data/scenes/street-video-1080p.mp4").is_file():
        pytest.skip("../shared street video not found")
    assert pipeline_main(["--quick", "--compare", "--frames", "9", "--sources", "1,2", "--outdir", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("throughput_*.json")
    result = json.loads(report.read_text())["result"]
    rows = {row["run"]: row for row in result["rows"]}
    workers = "2 SR workers x 1 thread, max batch 8"
    assert set(rows) == {"sequential", "pipelined", f"pipelined, {workers}", "2 sources, 1 process",
                         f"2 sources, 1 process, {workers}", "2 processes", "2 processes x 1 thread"}
    assert result["same_work"] and rows["sequential"]["faces"] >= 7 * 3
    assert rows[f"pipelined, {workers}"]["faces"] == rows["sequential"]["faces"]
    assert rows[f"2 sources, 1 process, {workers}"]["faces"] == rows["2 processes x 1 thread"]["faces"] == \
        2 * rows["sequential"]["faces"]
    assert rows["2 sources, 1 process"]["faces"] == rows["2 processes"]["faces"] == 2 * rows["sequential"]["faces"]
    assert rows["2 processes"]["processes"] == 2 and rows["2 sources, 1 process"]["sr_batches"]["frames"] == 18
    assert all(row["latency_p95_ms"] >= row["latency_p50_ms"] > 0 and row["peak_rss_mb"] > 0 for row in rows.values())
    assert ") / sequential:" in (tmp_path / report.with_suffix(".md").name).read_text()


@pytest.mark.shared
def test_camera_benchmark_scores_models_against_bicubic_of_the_same_recording(tmp_path):
    """PSNR gains and dlib identity, each against bicubic of the same degraded LR (numbers not asserted)."""
    pytest.importorskip("dlib", reason="identity needs dlib-bin (the [bench] extra)")
    from benchmarks.camera import main as camera_main

    assert camera_main(["--models", "pfsr_x4", "--limit", "6", "--levels", "clean,camera", "--framings",
                        "aligned,loose", "--identity", "--outdir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "camera.json").read_text())["rows"]
    assert len(rows) == 2 * 2 * 3  # framings x levels x (bicubic, the model, the default export: model + twin)
    assert sum("gated" in r["method"] for r in rows) == 4
    model_rows = [r for r in rows if r["method"].startswith("pfsr_x4")]
    assert all(r["gain_low"] <= r["gain_db"] <= r["gain_high"] and len(r["distance_delta"]) == 3 for r in model_rows)
    bicubic = {(r["framing"], r["level"]): r["psnr"] for r in rows if r["method"].startswith("bicubic")}
    assert bicubic[("aligned", "camera")] < bicubic[("aligned", "clean")]  # the camera costs bicubic too
    assert "rank-1" in (tmp_path / "camera.md").read_text()


def test_quick_runs_do_not_replace_published_results(tmp_path, monkeypatch):
    import argparse

    from benchmarks import common

    payload = {"machine": {"cores": 2}}
    assert common.results_dir(argparse.Namespace(outdir=None, quick=True), payload) == \
        common.QUICK_RESULTS_ROOT / "cpu-2core"
    assert common.results_dir(argparse.Namespace(outdir=None, quick=False), payload) is None  # published
    assert common.results_dir(argparse.Namespace(outdir=tmp_path, quick=True), payload) == tmp_path
    assert not str(common.QUICK_RESULTS_ROOT).startswith(str(common.RESULTS_ROOT))


def test_report_collects_every_models_speed_file(tmp_path):
    from benchmarks.report import section

    machine = tmp_path / "results" / "cpu-x"
    machine.mkdir(parents=True)
    (machine / "speed_dic.md").write_text("# Speed dic\n")
    (machine / "speed_pfsr.md").write_text("# Speed pfsr\n")
    (machine / "speed_pfsr.png").write_bytes(b"png")
    (machine / "quality.md").write_text("# Quality\n")
    text = section(tmp_path / "results", page_dir=tmp_path)
    assert text.index("### Speed dic") < text.index("### Speed pfsr") < text.index("### Quality")
    assert "![speed_pfsr on cpu-x](results/cpu-x/speed_pfsr.png)" in text
    assert "speed_dic.png" not in text


def test_report_parses_its_arguments_and_help_writes_nothing(tmp_path, capsys):
    from benchmarks.report import main as report_main

    machine = tmp_path / "results" / "cpu-x"
    machine.mkdir(parents=True)
    (machine / "quality.md").write_text("# Quality\n")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["--help"])
    assert exit_info.value.code == 0 and "--out" in capsys.readouterr().out
    out = tmp_path / "docs" / "performance.md"
    out.parent.mkdir()
    assert report_main(["--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    assert "### Quality" in out.read_text() and "Machine `cpu-x`" in out.read_text()


@pytest.mark.shared
def test_frames_quick_leaves_large_faces_and_the_background_alone(tmp_path, shared_dir, fast_sr_artifact):
    """K = 1: every face region equals the original (nothing enhanced at its recorded size); K >= 2: outside
    the faces the runtime's frame is exactly plain bicubic interpolation."""
    from benchmarks.frames import main as frames_main

    assert frames_main(["--models", str(fast_sr_artifact), "--quick", "--outdir", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "frames.json").read_text())["summary"]
    at_one = [r for r in summary if r["K"] == 1]
    assert at_one and all(r["runtime_db"] == 100.0 for r in at_one)  # identical to the original
    outside = [r for r in summary if r["region"] == "outside the faces" and r["K"] > 1]
    assert len(outside) == 3 and all(abs(r["gain_db"]) < 0.01 for r in outside)
    assert (tmp_path / "frames.md").is_file()


@pytest.mark.shared
def test_crossover_quick_finds_where_a_model_stops_paying(tmp_path, shared_dir, fast_sr_artifact):
    """The linear-resize 'model' is plain interpolation: it never beats bicubic by much, and never above 16 px."""
    from benchmarks.crossover import main as crossover_main

    if not (shared_dir / "data/faces-utk/splits.json").is_file():
        pytest.skip("UTK faces not found")
    assert crossover_main(["--models", str(fast_sr_artifact), "--limit", "20", "--sizes", "8,16,32",
                           "--outdir", str(tmp_path)]) == 0
    (model,) = json.loads((tmp_path / "crossover.json").read_text())["models"]
    assert [r["native_px"] for r in model["rows"]] == [8, 16, 32]
    assert model["rows"][-1]["gain_db"] < 0  # shrinking 32 px faces to 16 loses detail


@pytest.mark.shared
def test_faces_grid_has_a_column_per_method_and_a_row_per_face(tmp_path):
    import cv2

    from benchmarks.grid import LABEL_HEIGHT, main as grid_main

    out = tmp_path / "grid.png"
    assert grid_main(["--models", "pfsr", "--faces", "0,5,9",
                      "--out", str(out), "--cache", ""]) == 0
    grid = cv2.imread(str(out))
    assert grid.shape == (LABEL_HEIGHT + 3 * 128, 4 * 128, 3)  # LR, bicubic, pfsr, HR
    assert grid_main(["--faces", "999999", "--out", str(out), "--cache", ""]) == 2
    from models import shipped_weights

    assert grid_main(["--models", "pfsr", "--weights", f"pfsr:again={shipped_weights('pfsr')}", "--faces", "0,5",
                      "--degradation", "camera", "--out", str(out), "--cache", ""]) == 0
    camera = cv2.imread(str(out))
    assert camera.shape == (LABEL_HEIGHT + 2 * 128, 5 * 128, 3)  # LR, bicubic, pfsr, again, HR
    assert np.array_equal(camera[LABEL_HEIGHT:, 2 * 128:3 * 128], camera[LABEL_HEIGHT:, 3 * 128:4 * 128])
    assert not np.array_equal(camera[LABEL_HEIGHT:, :128], grid[LABEL_HEIGHT:LABEL_HEIGHT + 256, :128])  # degraded


def test_cpu_scaling_reports_threads_and_parallel_workers(tmp_path, make_artifact):
    import os

    from benchmarks.cpu_scaling import main as scaling_main

    model = make_artifact("scaling", mode="linear")
    assert scaling_main(["--model", str(model), "--seconds", "0.2", "--faces", "2", "--outdir", str(tmp_path)]) == 0
    (report,) = tmp_path.glob("cpu_scaling_*.json")
    rows = json.loads(report.read_text())["rows"]
    cores = os.cpu_count()
    assert [row["threads"] for row in rows] == list(range(1, cores + 1)) + ([cores] if cores > 1 else [])
    assert all(row["faces_per_s"] > 0 for row in rows) and rows[0]["speedup"] == 1.0
