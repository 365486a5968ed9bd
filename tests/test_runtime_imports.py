"""The lean runtime imports and runs without torch, TensorRT, CUDA Python, onnx or the training side.

A subprocess installs a meta-path hook that refuses those packages, imports every runtime module, then
runs the CLI on a small input (an image and a tiny ONNX model built beforehand in this process).
"""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2

REPO_ROOT = Path(__file__).resolve().parents[1]

BLOCKED = ["torch", "tensorrt", "cuda", "pycuda", "onnx", "models", "training", "export", "calibration"]

SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, pkgutil, runpy, sys

    BLOCKED = set(json.loads(sys.argv[1]))
    attempts = []

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in BLOCKED:
                attempts.append(fullname)
                raise ImportError(f"blocked by test: {fullname}")
            return None

    sys.meta_path.insert(0, Refuse())
    import runtime
    modules = sorted(m.name for m in pkgutil.walk_packages(runtime.__path__, "runtime."))
    for name in modules:
        importlib.import_module(name)
    code = None
    if len(sys.argv) > 2:  # CLI arguments given: run it too
        sys.argv = ["runtime.enhance", *sys.argv[2:]]
        try:
            runpy.run_module("runtime.enhance", run_name="__main__", alter_sys=True)
        except SystemExit as done:
            code = done.code
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("RESULT " + json.dumps({"modules": modules, "attempts": attempts, "loaded": loaded, "code": code}))
""")


def _run_blocked(*cli_args) -> dict:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(BLOCKED), *map(str, cli_args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert result["loaded"] == [], f"heavy modules were imported: {result['loaded']}"
    result["stderr"] = proc.stderr
    return result


def test_every_runtime_module_imports_without_heavy_packages():
    result = _run_blocked()
    expected = {"runtime.enhance", "runtime.assets", "runtime.measure_framing", "runtime.pipeline",
                "runtime.backends.tensorrt_backend", "runtime.backends.torch_backend", "runtime.backends.cuda_api",
                "runtime.backends.onnxruntime_backend", "runtime.sources.live", "runtime.sources.uri"}
    assert expected <= set(result["modules"])
    assert result["code"] is None


def test_cli_runs_without_heavy_packages(tmp_path, sr_artifact, shared_dir, detector_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "group.jpg"), cv2.imread(str(shared_dir / "data/scenes/group-6faces.jpg")))
    out, summary_path = tmp_path / "out", tmp_path / "summary.json"
    result = _run_blocked("--source", folder, "--model", sr_artifact, "--backend", "onnxruntime", "--output", out,
                          "--headless", "--detector-model", detector_path, "--summary", summary_path)
    assert result["code"] == 0, result["stderr"][-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["frames"] == 1 and summary["faces"] >= 5
    assert len(list(out.glob("frame_*.jpg"))) == 1


def test_backend_modules_import_their_framework_lazily():
    """Even choosing a backend object imports nothing until activate()."""
    code = textwrap.dedent("""
        import sys
        for name in ("torch", "tensorrt", "cuda", "pycuda", "models", "tritonclient"):
            sys.modules[name] = None  # any import of these raises ImportError
        from runtime.backends import BACKENDS
        from runtime.backends.tensorrt_backend import check_engine_compat
        from runtime.backends.cuda_probe import cuda_device_count
        print(sorted(BACKENDS), cuda_device_count() >= 0)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['onnxruntime', 'tensorrt', 'torch', 'triton'] True"
