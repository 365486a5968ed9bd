"""PFSR: layout (upstream key names), progressive forward, BatchNorm folding, checkpoints, training task."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import WeightsError, create_model, list_models
from models.pfsr import PFSR, PFSR_CONFIGS, PFSRConfig
from training.checkpoints import save_weights
from training.data import DEFAULT_DATA_DIR
from training.tasks import ProgressiveSchedule, attention_map, get_task, sample_batch

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "weights" / "pfsr_utk.safetensors"
HAVE_DATA = (DEFAULT_DATA_DIR / "splits.json").is_file()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _with_random_batchnorm(model: PFSR) -> PFSR:
    """Non-trivial BN statistics and affine parameters, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()


@pytest.fixture
def tiny() -> PFSR:
    torch.manual_seed(0)
    return _with_random_batchnorm(create_model("pfsr", config="tiny"))


# --- architecture ------------------------------------------------------------------------------------


def test_registered():
    assert "pfsr" in list_models()


def test_default_config_matches_the_paper_generator():
    model = PFSR()
    state = model.state_dict()
    assert len(state) == 76
    assert sum(p.numel() for p in model.parameters()) == 8_969_097
    # Upstream names and shapes (model.py `Generator`), spot-checked across the three steps.
    expected = {
        "step1.0.weight": (512, 3, 3, 3), "step1.1.running_var": (512,),
        "step1.3.conv.0.conv.weight_orig": (512, 512, 3, 3), "step1.3.conv.4.bias": (512,),
        "step1.4.weight": (512, 256, 4, 4), "step1.5.weight": (256,),
        "step2.0.conv.3.conv.weight_orig": (256, 256, 3, 3), "step2.1.weight": (256, 128, 4, 4),
        "step3.0.conv.0.conv.bias": (128,), "step3.1.weight": (128, 64, 4, 4), "step3.2.running_mean": (64,),
        "to_rgb.0.weight": (3, 256, 1, 1), "to_rgb.1.weight": (3, 128, 1, 1), "to_rgb.2.weight": (3, 64, 1, 1),
    }
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key


def test_width_is_halved_per_step():
    assert PFSRConfig(8).stage_channels == (4, 2, 1)
    assert PFSRConfig().stage_channels == (256, 128, 64)


@pytest.mark.parametrize("width", [12, 0, -16])
def test_bad_widths_are_refused(width):
    with pytest.raises(ValueError, match="multiple of 8"):
        PFSRConfig(width)


def test_config_errors():
    with pytest.raises(ValueError, match="scale=8 .* or scale=4"):
        PFSRConfig(scale=2)
    # Weights saved before models declared their I/O carry "num_steps": 1; it is read and dropped.
    assert PFSRConfig.from_dict({"width": 64, "scale": 8, "num_steps": 1}) == PFSRConfig(64)
    with pytest.raises(ValueError, match="'num_steps' is retired"):
        PFSRConfig.from_dict({"width": 64, "num_steps": 2})
    with pytest.raises(ValueError, match="unknown PFSR config keys"):
        PFSRConfig.from_dict({"width": 64, "num_features": 3})


@pytest.mark.parametrize("stage,size", [(1, 32), (2, 64), (3, 128)])
def test_each_step_doubles_the_size(tiny, stage, size):
    with torch.no_grad():
        assert tiny(torch.rand(2, 3, 16, 16), stage).shape == (2, 3, size, size)


def test_alpha_blends_the_upsampled_previous_step(tiny):
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        previous = tiny(lr, 2)
        new = tiny(lr, 3)
        at0, half = tiny(lr, 3, alpha=0.0), tiny(lr, 3, alpha=0.5)
    upsampled = F.interpolate(previous, scale_factor=2, mode="nearest")
    torch.testing.assert_close(at0, upsampled)
    torch.testing.assert_close(half, 0.5 * upsampled + 0.5 * new)
    assert (new - upsampled).abs().max() > 1e-3


def test_unroll_interface(tiny):
    lr = torch.rand(1, 3, 16, 16)
    sr_steps, heatmaps = tiny.unroll(lr)
    assert len(sr_steps) == 1 and heatmaps == []
    torch.testing.assert_close(sr_steps[0], tiny(lr))
    with pytest.raises(ValueError, match="not recurrent"):
        tiny.unroll(lr, steps=2)
    with pytest.raises(ValueError, match="no landmark branch"):
        tiny.unroll(lr, last_heatmap=True)


def test_fused_model_has_no_batchnorm_and_matches(tiny):
    fused = tiny.fused()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    lr = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = tiny(lr)
        assert (expected - tiny(lr * 0)).abs().max() > 1e-3  # the model is not constant
        torch.testing.assert_close(fused(lr), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused.unroll(lr)[0][0], expected, atol=1e-5, rtol=1e-5)


# --- checkpoints ------------------------------------------------------------------------------------


def test_upstream_checkpoint_layout_loads_strictly(tmp_path, tiny):
    """Upstream saves {"model_state_dict", "step", "alpha", "iteration"}, DDP-wrapped ("module.")."""
    state = {f"module.{k}": v for k, v in tiny.state_dict().items()}
    path = tmp_path / "generator_checkpoint.pth"
    torch.save({"model_state_dict": state, "step": 3, "alpha": 1.0, "iteration": 11000}, path)
    loaded = create_model("pfsr", config="tiny", weights=path)
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(lr), tiny(lr), atol=0, rtol=0)


def test_checkpoint_with_a_missing_key_is_refused(tmp_path, tiny):
    state = tiny.state_dict()
    del state["step2.0.conv.0.conv.weight_orig"]
    path = tmp_path / "broken.pth"
    torch.save({"model_state_dict": state}, path)
    with pytest.raises(WeightsError, match="step2.0.conv.0.conv.weight_orig"):
        create_model("pfsr", config="tiny", weights=path)


def test_wrong_width_checkpoint_names_the_shapes(tmp_path, tiny):
    path = save_weights(tiny, tmp_path / "tiny.safetensors")  # no config in the header
    with pytest.raises(WeightsError, match="shape"):
        create_model("pfsr", config="quarter", weights=path)


def test_project_safetensors_carries_its_config(tmp_path, tiny):
    path = save_weights(tiny, tmp_path / "tiny.safetensors", metadata={"config": tiny.config.to_dict()})
    assert create_model("pfsr", weights=path).config == PFSR_CONFIGS["tiny"]


# --- training task ----------------------------------------------------------------------------------


def test_progressive_schedule():
    schedule = ProgressiveSchedule(fractions=(0.1, 0.2, 0.7), fade=0.5)
    assert schedule.at(0, 1000) == (1, 1.0)
    assert schedule.at(99, 1000) == (1, 1.0)
    assert schedule.at(100, 1000) == (2, 0.0)
    assert schedule.at(150, 1000) == pytest.approx((2, 0.5))
    assert schedule.at(250, 1000) == (2, 1.0)
    assert schedule.at(300, 1000) == (3, 0.0)
    assert schedule.at(475, 1000) == pytest.approx((3, 0.5))
    assert schedule.at(999, 1000) == (3, 1.0)
    assert schedule.at(5000, 1000) == (3, 1.0)  # resumed past the end


def test_attention_map_peaks_on_the_landmarks():
    landmarks = torch.zeros(1, 68, 2)
    landmarks[0, :, 0], landmarks[0, :, 1] = 64.0, 32.0  # all points at x=64, y=32 (128 px)
    weights = attention_map(landmarks, 64, sigma=1.5)
    assert weights.shape == (1, 1, 64, 64)
    assert weights.max().item() == pytest.approx(1.0)
    y, x = divmod(int(weights.flatten().argmax()), 64)
    assert (x, y) == (32, 16)
    assert weights[0, 0, 60, 5].item() < 1e-6


def _fake_batch(n=4):
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    lr = hr[:, ::8, ::8].copy()
    from training.data import FaceSplit

    split = FaceSplit([str(i) for i in range(n)], hr, lr, rng.uniform(20, 108, (n, 68, 2)).astype(np.float32))
    return sample_batch(split, np.arange(n))


@pytest.mark.parametrize("iteration,size", [(0, 32), (200, 64), (900, 128)])
def test_task_trains_the_scheduled_step(iteration, size):
    torch.manual_seed(0)
    task = get_task("pfsr")
    model = task.build_model(task.resolve_config("tiny"))
    task.set_iteration(iteration, 1000)
    batch = _fake_batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        loss, parts = task.loss(model, batch)
        assert set(parts) == {"l1", "attention"}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    # Only the scheduled steps get gradients (step 3 is idle while step 1 trains).
    step3_grad = model.step3[0].conv[0].conv.weight_orig.grad
    assert (step3_grad is not None and step3_grad.abs().sum() > 0) == (size == 128)
    sr, _ = task.predict(model.eval(), batch.lr)
    assert sr[0].shape == (4, 3, 128, 128)
    assert task.final_model_ready == (iteration == 900)


def test_mse_pixel_loss_squares_the_errors_of_both_terms():
    torch.manual_seed(0)
    tasks = {kind: get_task("pfsr", pixel_loss=kind) for kind in ("l1", "mse")}
    model = tasks["l1"].build_model(tasks["l1"].resolve_config("tiny")).eval()
    tasks["mse"].build_model(tasks["mse"].resolve_config("tiny"))
    batch = _fake_batch()
    with torch.no_grad():
        sr = model(batch.lr, 3, 1.0).float()
        weights = attention_map(batch.landmarks, 128, 3.0)
        squared = (sr - batch.hr.float()).square()
        loss, parts = tasks["mse"].loss(model, batch)
    assert set(parts) == {"mse", "attention"}
    assert parts["mse"] == pytest.approx(squared.mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx((squared.mean() + (squared * weights).mean()).item(), rel=1e-5)
    assert parts["mse"] < tasks["l1"].loss(model, batch)[1]["l1"]  # errors < 1 shrink when squared
    with pytest.raises(ValueError, match="pixel loss 'l2'"):
        get_task("pfsr", pixel_loss="l2")


def test_cli_trains_pfsr(tmp_path):
    """The generic loop runs the PFSR task end to end on a miniature data folder."""
    from PIL import Image

    from training import train as train_mod

    root = tmp_path / "faces"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"img{i}.jpg" for i in range(6)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(root / "images" / name)
    np.savez(root / "landmarks68.npz", names=np.array(names), landmarks=rng.uniform(30, 170, (6, 68, 2)))
    (root / "splits.json").write_text(json.dumps({"train": names[:4], "val": names[4:], "test": []}))
    args = train_mod.parse_args(["--model", "pfsr", "--config", "tiny", "--data", str(root), "--cache", "",
                                 "--out", str(tmp_path / "run"), "--iters", "10", "--batch", "2",
                                 "--val-every", "5", "--log-every", "5", "--threads", "1"])
    summary = train_mod.train(args)
    assert summary["iterations"] == 10
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert [h["iteration"] for h in history] == [5, 10]
    # Validation at iteration 5 (step 2 fading in) must not pick the best weights; the final one does.
    assert (tmp_path / "run" / "best.safetensors").is_file()
    from models.weights import read_metadata

    assert read_metadata(tmp_path / "run" / "best.safetensors")["iteration"] == "10"


# --- shipped weights --------------------------------------------------------------------------------


@pytest.mark.shared
@pytest.mark.skipif(not HAVE_DATA, reason="../shared/data/faces-utk not available")
@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped PFSR weights absent")
def test_shipped_weights_beat_bicubic_on_test_slice(split_cache):
    from training.data import load_split
    from training.evaluate import evaluate_bicubic, evaluate_model

    split = load_split("test", cache_dir=split_cache).subset(50)
    model = create_model("pfsr", weights=SHIPPED)
    (row,) = evaluate_model(model, split)
    bicubic = evaluate_bicubic(split)
    assert row["psnr"] > bicubic["psnr"] + 0.5, (row, bicubic)
    assert row["ssim"] > bicubic["ssim"]


# --- the x4 variant (32 -> 128) -----------------------------------------------------------------------------
def test_x4_variant_has_two_steps_and_the_same_key_names():
    model = create_model("pfsr_x4", config="tiny").eval()
    assert model.config.num_stages == 2 and model.config.input_size == 32
    assert {k.split(".")[0] for k in model.state_dict()} == {"step1", "step2", "to_rgb"}
    with torch.no_grad():
        assert model(torch.rand(2, 3, 32, 32), 1).shape == (2, 3, 64, 64)
        assert model(torch.rand(2, 3, 32, 32)).shape == (2, 3, 128, 128)
    from models import model_io

    io = model_io("pfsr_x4", model.config)
    assert (io.input_size, io.scale, io.output_size, io.recurrent_steps) == (32, 4, 128, None)


def test_x4_fused_matches_unfused():
    model = _with_random_batchnorm(create_model("pfsr_x4", config="tiny")).eval()
    lr = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.fused()(lr), model(lr), atol=1e-5)


def test_x4_task_uses_32_px_inputs_and_a_two_step_schedule():
    task = get_task("pfsr_x4", attention_weight=1.0)
    task.build_model(task.resolve_config("tiny"))
    assert task.lr_size == 32 and task.schedule.fractions == (0.3, 0.7)
    assert task.schedule.at(0, 100) == (1, 1.0) and task.schedule.at(99, 100) == (2, 1.0)


def test_x4_exports_with_its_declared_input(tmp_path):
    from export.build import build

    result = build("pfsr_x4", random_init=True, config="tiny", outdir=tmp_path)
    assert result.onnx_path.name == "pfsr_x4_fp32.onnx"
    assert result.manifest.inputs[0].shape == ("N", 3, 32, 32) and result.manifest.scale == 4
    assert "x3x32x32" in result.manifest.trtexec and result.manifest.checks["parity"]["passed"]


def test_final_only_schedule_trains_the_whole_model_from_the_start():
    schedule = ProgressiveSchedule.final_only(3)
    assert [schedule.at(i, 100) for i in (0, 1, 50, 99)] == [(3, 1.0)] * 4
    assert ProgressiveSchedule.final_only(2).at(0, 10) == (2, 1.0)
