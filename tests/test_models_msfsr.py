"""MSFSR: the upstream parameter layout (strict loading of per-stage state dicts built from a transcription of
upstream's module tree), sizes, and export through the project's pipeline."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from models import create_model, model_io
from models.msfsr import MSFSR, MSFSR_CONFIGS, MSFSRStage, load_official_stages
from models.weights import WeightsError
from runtime.shared_data import utk_dir


# --- a test-only transcription of upstream's Generator tree (model/MSFSR.py): layout only, written out flat ---
def _bn_relu(c):
    return [nn.BatchNorm2d(c), nn.ReLU()]


class _CALayer(nn.Module):
    def __init__(self, c, r=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(c, c // r, 1), nn.ReLU(), nn.Conv2d(c // r, c, 1), nn.Sigmoid())


class _RCAB(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), _CALayer(c))


class _SE(nn.Module):
    def __init__(self, c, r=8):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(), nn.Linear(c // r, c, bias=False),
                                nn.Sigmoid())


class _ResnetBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv_block = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), *_bn_relu(c),
                                        nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=False), nn.BatchNorm2d(c))


class _Residual(nn.Module):
    def __init__(self, i, o):
        super().__init__()
        self.convBlock = nn.Sequential(nn.BatchNorm2d(i), nn.ReLU(), nn.Conv2d(i, o // 2, 1), *_bn_relu(o // 2),
                                       nn.Conv2d(o // 2, o // 2, 3, 1, 1), *_bn_relu(o // 2), nn.Conv2d(o // 2, o, 1))
        if i != o:
            self.skipConv = nn.Conv2d(i, o, 1)


class _HourGlass(nn.Module):
    def __init__(self, c, n):
        super().__init__()
        self._add(c, n)

    def _add(self, c, n):
        setattr(self, f"res{n}_1", _Residual(c, c))
        setattr(self, f"pool{n}_1", nn.MaxPool2d(2, 2))
        setattr(self, f"res{n}_2", _Residual(c, c))
        if n > 1:
            self._add(c, n - 1)
        else:
            self.res_center = _Residual(c, c)
        setattr(self, f"res{n}_3", _Residual(c, c))
        setattr(self, f"unsample{n}", nn.Upsample(scale_factor=2))


class _UpstreamGenerator(nn.Module):
    def __init__(self):
        super().__init__()
        self.BUM = nn.Sequential(nn.Conv2d(3, 64, 5, padding=2), *_bn_relu(64), _RCAB(64), nn.Conv2d(64, 32, 3, padding=1),
                                 *_bn_relu(32), nn.Conv2d(32, 12, 3, padding=1), nn.PixelShuffle(2))
        self.BFM_head = nn.Sequential(nn.Conv2d(3, 64, 3, 2, 1, bias=False), *_bn_relu(64), _ResnetBlock(64), _SE(64),
                                      nn.ReflectionPad2d(1), nn.Conv2d(64, 64, 3, bias=False), nn.Tanh(), _SE(64))
        self.BEM = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), *_bn_relu(64), _Residual(64, 128),
                                 _ResnetBlock(128), _ResnetBlock(128), _HourGlass(128, 3), _HourGlass(128, 3),
                                 nn.Conv2d(128, 11, 1), *_bn_relu(11))
        self.BFM_Tail = nn.Sequential(nn.Conv2d(75, 64, 3, 1, 1, bias=False), *_bn_relu(64), _SE(64),
                                      nn.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1, bias=False), *_bn_relu(64),
                                      _ResnetBlock(64), _SE(64), nn.ReflectionPad2d(1), nn.Conv2d(64, 3, 3, bias=False),
                                      nn.Tanh())


def _random_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values in every tensor (BatchNorm statistics included), so a wrong mapping shows in the output."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
    return state


def test_official_stage_layout_loads_strictly_and_computes_the_same():
    upstream = _UpstreamGenerator()
    ours = MSFSRStage(MSFSR_CONFIGS["default"])
    assert {k: tuple(v.shape) for k, v in upstream.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    state = _random_state(upstream, 0)
    ours.load_state_dict(state, strict=True)
    ours.eval()
    x = torch.rand(2, 3, 16, 16)
    coarse, boundaries, output = ours(x)
    assert coarse.shape == (2, 3, 32, 32) and boundaries.shape == (2, 11, 16, 16) and output.shape == (2, 3, 32, 32)
    assert output.abs().max() <= 1.0 and output.std() > 0.01  # Tanh output, not a constant


def test_three_official_stage_files_load_into_the_network_and_chain():
    model = MSFSR(MSFSR_CONFIGS["default"]).eval()
    states = [_random_state(_UpstreamGenerator(), seed) for seed in range(3)]
    load_official_stages(model, states)
    stages = [MSFSRStage(MSFSR_CONFIGS["default"]).eval() for _ in range(3)]
    for stage, state in zip(stages, states):
        stage.load_state_dict(state)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        expected = stages[2](stages[1](stages[0](x)[2])[2])[2]  # upstream test.py chains stage outputs
        assert torch.allclose(model.unroll(x)[0][-1], expected, atol=1e-6)
    bad = dict(states[0])
    bad.pop("BUM.0.weight")
    with pytest.raises(WeightsError, match="missing: BUM.0.weight"):
        load_official_stages(model, [bad, states[1], states[2]])


def test_sizes_of_the_configs():
    count = lambda cfg: sum(p.numel() for p in MSFSR(cfg).parameters())  # noqa: E731
    assert count(MSFSR_CONFIGS["default"]) == 6_343_539  # 2.11 M per stage, as upstream
    assert 0.9e6 < count(MSFSR_CONFIGS["lite"]) < 1.1e6
    io = model_io("msfsr", MSFSR_CONFIGS["lite"])
    assert (io.input_size, io.output_size, io.is_recurrent) == (16, 128, False)


def test_upsample_skip_starts_each_stage_at_bilinear_and_keeps_the_parameter_layout():
    from dataclasses import replace

    skip_config = MSFSR_CONFIGS["lite"]
    assert skip_config.upsample_skip and not MSFSR_CONFIGS["default"].upsample_skip
    plain = MSFSRStage(replace(skip_config, upsample_skip=False)).eval()
    stage = MSFSRStage(skip_config).eval()
    assert {k: v.shape for k, v in stage.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    for last_conv in (stage.BUM[-2], stage.BFM_Tail[-2]):  # the convs before PixelShuffle and before the Tanh
        nn.init.zeros_(last_conv.weight)
        if last_conv.bias is not None:
            nn.init.zeros_(last_conv.bias)
    x = torch.rand(2, 3, 16, 16)
    bilinear = nn.functional.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    with torch.no_grad():
        coarse, _, output = stage(x)
    torch.testing.assert_close(coarse, bilinear)
    torch.testing.assert_close(output, bilinear)


def test_unroll_gives_every_stage_output_and_evaluate_reports_the_curve():
    from training.data import FaceSplit
    from training.evaluate import evaluate_model

    model = MSFSR(MSFSR_CONFIGS["lite"]).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        stage_outputs = [result[2] for result in model(x)]
        curve, heatmaps = model.unroll(x)
        first_two, _ = model.unroll(x, steps=2)
    assert [out.shape[-1] for out in curve] == [32, 64, 128] and heatmaps == []
    assert all(torch.equal(a, b) for a, b in zip(curve, stage_outputs))
    assert len(first_two) == 2 and torch.allclose(first_two[1], curve[1])
    with pytest.raises(ValueError, match="stages 1..3"):
        model.unroll(x, steps=4)
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (4, 128, 128, 3), dtype=np.uint8)
    split = FaceSplit([f"{i}.jpg" for i in range(4)], hr, hr[:, ::8, ::8], np.zeros((4, 68, 2), np.float32))
    rows = evaluate_model(model, split, batch_size=2)
    assert [row["step"] for row in rows] == [1, 2, 3] and all(0 < row["psnr"] < 60 for row in rows)


def test_lite_exports_with_parity_and_optional_boundary_maps(tmp_path):
    from export.build import ExportError, build
    from training.checkpoints import save_weights

    torch.manual_seed(0)
    model = create_model("msfsr", "lite")
    for module in model.modules():  # PyTorch's default init: outputs far from 0, so parity means something
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            module.reset_parameters()
    weights = save_weights(model, tmp_path / "lite.safetensors", metadata={"config": model.config.to_dict()})
    result = build("msfsr", weights=str(weights), outdir=tmp_path)
    assert result.manifest.checks["parity"]["passed"]
    assert result.manifest.outputs[0].shape[1:] == (3, 128, 128)

    # --with-boundaries: the last stage's 11 boundary maps beside the image, checked against PyTorch too
    with_maps = build("msfsr", weights=str(weights), outdir=tmp_path, with_boundaries=True)
    assert with_maps.onnx_path.name == "msfsr_fp32_bd.onnx"
    assert [(o.name, o.shape[1:]) for o in with_maps.manifest.outputs] == [("sr", (3, 128, 128)),
                                                                           ("boundaries", (11, 64, 64))]
    parity = with_maps.manifest.checks["parity"]
    assert parity["passed"] and parity["maps_max_abs_error"] < 1e-4
    from runtime.artifact import load_artifact
    from runtime.backends import create_backend

    lr = torch.rand(2, 3, 16, 16)
    with create_backend("onnxruntime", load_artifact(with_maps.manifest_path)) as backend:
        outputs = backend.infer({"lr": lr.numpy()})
    with torch.no_grad():
        expected = model.eval().unroll(lr, last_heatmap=True)[1][-1].numpy()
    np.testing.assert_allclose(outputs["boundaries"], expected, atol=1e-4)
    with pytest.raises(ExportError, match="no 'boundaries' output"):
        build("pfsr", random_init=True, config="tiny", outdir=tmp_path, with_boundaries=True)


def test_boundary_maps_peak_on_the_polylines():
    import numpy as np

    from training.boundaries import boundary_maps, segment_distances

    grid = np.array([[0.0, 0.0], [5.0, 3.0], [12.0, 0.0]])
    np.testing.assert_allclose(segment_distances(np.array([[0.0, 0.0], [10.0, 0.0]]), grid), [0.0, 3.0, 2.0])
    landmarks = np.random.default_rng(0).uniform(20, 108, (68, 2))
    maps = boundary_maps(landmarks, 64, 128, sigma=1.5)
    assert maps.shape == (11, 64, 64) and maps.max() <= 1.0
    x, y = np.round((landmarks[36] + 0.5) * 0.5 - 0.5).astype(int)  # a left-eye point, on map 5
    assert maps[5, y, x] > 0.7 and maps[5].mean() < 0.2


def test_msfsr_task_trains_stage_by_stage():
    import numpy as np

    from training.tasks import get_task, sample_batch
    from tests.helpers import fake_split

    torch.manual_seed(0)
    task = get_task("msfsr")
    model = task.build_model(task.resolve_config({"features": 16, "boundary_width": 16, "boundary_blocks": 1,
                                                  "hourglasses": 1}))
    batch = sample_batch(fake_split(), np.arange(4))
    task.set_iteration(0, 100)
    assert task.active == 1 and not task.final_model_ready
    task.set_iteration(20, 100)
    assert task.active == 2
    task.loss(model, batch)  # stage 2 joined during the run: it starts as a copy of stage 1 (the forward
    # pass of this loss moves BatchNorm's running statistics, so compare the weights)
    assert all(torch.equal(a, b) for a, b in zip(model.stages[0].parameters(), model.stages[1].parameters()))
    assert not torch.equal(model.stages[2].BUM[0].weight, model.stages[1].BUM[0].weight)
    resumed = get_task("msfsr")
    resumed.set_iteration(99, 100)  # a resumed run: its stages were trained before, nothing is copied
    assert resumed.active == 3 and resumed._joining == []
    task.set_iteration(99, 100)
    assert task.active == 3 and task.final_model_ready
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss, parts = task.loss(model, batch)
        assert set(parts) == {"l1", "boundary"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_a_fine_tune_trains_every_stage_from_the_start_and_copies_none():
    from types import SimpleNamespace

    from training.tasks import get_task

    task = get_task("msfsr", SimpleNamespace(task="sr", boundary_weight=1.0, final_stage_only=True))
    task.set_iteration(0, 100)
    assert task.active == 3 and task.final_model_ready and task._joining == []
    task.set_iteration(50, 100)
    assert task._joining == []  # trained stages are never overwritten by copies


# --- shipped weights ------------------------------------------------------------------------------------------
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "weights" / "msfsr_utk.safetensors"


@pytest.mark.shared
@pytest.mark.skipif(utk_dir() is None, reason="../shared/data/faces-utk not available")
@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped MSFSR weights absent")
def test_shipped_weights_beat_bicubic_and_every_stage_improves_on_the_last(split_cache):
    from training.data import load_split
    from training.evaluate import evaluate_bicubic, evaluate_model

    split = load_split("test", cache_dir=split_cache).subset(50)
    model = create_model("msfsr", weights=SHIPPED)
    assert model.config.upsample_skip  # read from the file's metadata
    rows = evaluate_model(model, split)
    bicubic = evaluate_bicubic(split)
    assert rows[-1]["psnr"] > bicubic["psnr"] + 1.5, (rows, bicubic)
    assert rows[0]["psnr"] < rows[1]["psnr"] < rows[2]["psnr"], rows


FRAMES_WEIGHTS = SHIPPED.with_name("msfsr_frames_utk.safetensors")


@pytest.mark.shared
@pytest.mark.skipif(utk_dir() is None, reason="../shared/data/faces-utk not available")
@pytest.mark.skipif(not FRAMES_WEIGHTS.is_file(), reason="shipped MSFSR frames weights absent")
def test_frames_weights_take_10px_faces_and_beat_bicubic_on_them(split_cache):
    """msfsr_frames_utk is for faces recorded at ~9-16 px and enlarged to the 16 px input, as the runtime does."""
    import cv2

    from models.weights import read_metadata
    from training.data import load_split
    from training.metrics import y_psnr_ssim

    assert float(read_metadata(FRAMES_WEIGHTS)["min_input_ratio"]) == 0.55  # the routing floor it declares
    hr = load_split("test", cache_dir=split_cache).subset(40).hr
    native = [cv2.resize(im, (10, 10), interpolation=cv2.INTER_AREA) for im in hr]
    model_input = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_CUBIC) for im in native])
    bicubic = np.stack([cv2.resize(im, (128, 128), interpolation=cv2.INTER_CUBIC) for im in native])
    model = create_model("msfsr", weights=FRAMES_WEIGHTS).eval()
    with torch.no_grad():
        outputs, _ = model.unroll(torch.from_numpy(model_input).permute(0, 3, 1, 2).float() / 255)
    sr = outputs[-1].clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    gain = np.mean([y_psnr_ssim(s, h)[0] - y_psnr_ssim(b, h)[0] for s, b, h in zip(sr, bicubic, hr)])
    assert gain > 1.0, gain
