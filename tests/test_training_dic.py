"""DIC-specific training: landmark pre-training (`--task landmarks`) and joint-training options (CPU, tiny)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models import WeightsError, create_model, load_landmark_weights
from models.dic import FeedbackHourGlass
from models.weights import read_metadata, read_state_dict
from training import train as train_mod
from training.data import make_heatmaps
from training.tasks import DICLandmarkTask, get_task, sample_batch, weighted_heatmap_mse
from tests.helpers import MICRO, fake_split, train_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_foreground_weighted_mse_matches_its_formula():
    target = make_heatmaps(torch.tensor([[[40.0, 60.0], [80.0, 20.0]]]), 32, 4.0, 1.5)
    pred = torch.rand_like(target) * 0.2
    assert weighted_heatmap_mse(pred, target, 0.0) == pytest.approx(F.mse_loss(pred, target).item())
    by_hand = ((1 + 10 * (target > 0.1).float()) * (pred - target) ** 2).mean()
    assert weighted_heatmap_mse(pred, target, 10.0) == pytest.approx(by_hand.item())
    # the all-zero plateau: with the weighting, predicting zeros costs several times more relative to a match
    zeros = torch.zeros_like(target)
    plain, weighted = weighted_heatmap_mse(zeros, target, 0.0), weighted_heatmap_mse(zeros, target, 10.0)
    assert weighted > 5 * plain


def _hourglass_grad_norm(task, model, batch) -> float:
    model.zero_grad(set_to_none=True)
    loss, _ = task.loss(model, batch)
    loss.backward()
    return sum(float(p.grad.abs().sum()) for p in model.HG.parameters() if p.grad is not None)


def test_detached_attention_keeps_the_sr_loss_off_the_hourglass():
    torch.manual_seed(0)
    task = get_task("dic", heatmap_weight=0.0, detach_attention_iters=3)
    model = task.build_model(task.resolve_config(MICRO))
    batch = sample_batch(fake_split(), np.arange(2))
    task.set_iteration(0, 10)
    assert task.detach_attention and _hourglass_grad_norm(task, model, batch) == 0.0
    task.set_iteration(3, 10)
    assert not task.detach_attention and _hourglass_grad_norm(task, model, batch) > 0.0


def test_hourglass_learning_rate_group_covers_every_parameter_once():
    task = get_task("dic", hg_lr_scale=0.1)
    model = task.build_model(task.resolve_config(MICRO))
    groups = task.param_groups(model, 1e-3)
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4])
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.HG.parameters()}


def test_checkpoint_with_lost_landmarks_is_never_best():
    task = get_task("dic", max_val_nme=0.1)
    assert task.score({"psnr": 25.0, "nme": 0.05}) == 25.0
    assert task.score({"psnr": 26.0, "nme": 0.5}) is None


def test_landmark_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    task = DICLandmarkTask()
    model = task.build_model(task.resolve_config(MICRO))
    batch = sample_batch(fake_split(), np.arange(4))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(10):
        torch.manual_seed(1)  # the same HR/blurry mix every time
        loss, _ = task.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_landmark_pretraining_writes_hourglass_weights_for_joint_training(fake_data_dir, tmp_path):
    hg_run = tmp_path / "hg"
    train_mod.train(train_args(fake_data_dir, hg_run, "--task", "landmarks", "--iters", "2"))
    weights = hg_run / "best.safetensors"
    state = read_state_dict(weights)
    assert set(state) == set(FeedbackHourGlass(MICRO["hg_num_feature"], 68).state_dict())  # raw upstream keys
    meta = read_metadata(weights)
    assert meta["task"] == "landmarks" and 0 < float(meta["val_nme_lr"]) < 10
    with pytest.raises(WeightsError, match="only the landmark hourglass"):
        create_model("dic", weights=weights)

    # joint run: the pre-trained hourglass goes in through --landmark-weights; 0 iterations = what was loaded
    joint = tmp_path / "joint"
    train_mod.train(train_args(fake_data_dir, joint, "--iters", "0", "--landmark-weights", str(weights)))
    loaded = create_model("dic", weights=joint / "last.safetensors")
    for key, value in loaded.HG.state_dict().items():
        assert torch.equal(value, state[key]), key
    history = json.loads((joint / "history.json").read_text())
    assert {"val_psnr", "val_nme"} <= set(history[-1])


def test_init_weights_warm_start_and_conflict_with_resume(fake_data_dir, tmp_path):
    train_mod.train(train_args(fake_data_dir, tmp_path / "a", "--iters", "1"))
    start = tmp_path / "a" / "last.safetensors"
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", "--iters", "0", "--init-weights", str(start)))
    a = create_model("dic", weights=start).state_dict()
    b = create_model("dic", weights=tmp_path / "b" / "last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(SystemExit):
        train_args(fake_data_dir, tmp_path / "c", "--init-weights", str(start),
                    "--resume", str(tmp_path / "a" / "checkpoint.pt"))


def test_landmark_weights_go_into_a_dic_model(tmp_path):
    hourglass = FeedbackHourGlass(MICRO["hg_num_feature"], 68)
    path = tmp_path / "hg.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in hourglass.state_dict().items()}, str(path))
    model = create_model("dic", MICRO)
    load_landmark_weights(model, path)
    assert all(torch.equal(v, hourglass.state_dict()[k]) for k, v in model.HG.state_dict().items())


# --- DICGAN ---------------------------------------------------------------------------------------


def test_lightcnn_discriminator_has_the_upstream_layout():
    from training.discriminators import LightCNNDiscriminator

    state = LightCNNDiscriminator().state_dict()
    expected = {"features.0.filter.weight": (96, 3, 5, 5), "features.2.conv_a.filter.weight": (96, 48, 1, 1),
                "features.2.conv.filter.weight": (192, 48, 3, 3), "features.7.conv.filter.weight": (256, 128, 3, 3),
                "classifier.0.filter.weight": (512, 8 * 8 * 128), "classifier.2.weight": (1, 256)}
    for key, shape in expected.items():
        assert tuple(state[key].shape) == shape, key
    assert LightCNNDiscriminator()(torch.rand(2, 3, 128, 128)).shape == (2, 1)


def test_sharpness_ratio_is_one_for_the_real_face_and_lower_for_a_blur():
    from PIL import Image, ImageFilter

    from training.metrics import sharpness_ratio

    hr = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)  # all detail
    blurred = np.asarray(Image.fromarray(hr).filter(ImageFilter.GaussianBlur(2)))
    assert sharpness_ratio(hr, hr) == pytest.approx(1.0)
    assert sharpness_ratio(blurred, hr) < 0.3


def test_gan_step_trains_the_discriminator_but_not_through_the_generator_loss():
    torch.manual_seed(0)
    task = get_task("dicgan")
    model = task.build_model(task.resolve_config(MICRO))
    batch = sample_batch(fake_split(), np.arange(2))
    before = {k: v.clone() for k, v in task.discriminator.state_dict().items()}
    loss, parts = task.loss(model, batch)
    assert {"l1", "heatmap", "g_gan", "d"} <= set(parts)
    changed = [k for k, v in task.discriminator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed  # the D step ran
    task.discriminator.zero_grad(set_to_none=True)
    loss.backward()
    assert all(p.grad is None for p in task.discriminator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_dicgan_resume_restores_the_discriminator_exactly(fake_data_dir, tmp_path):
    gan = ("--model", "dicgan")
    train_mod.train(train_args(fake_data_dir, tmp_path / "a", *gan, "--iters", "3"))
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", *gan, "--iters", "2"))
    ckpt = tmp_path / "b" / "checkpoint.pt"
    assert "discriminator" in torch.load(ckpt, weights_only=True)["task"]
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", *gan, "--iters", "3", "--resume", str(ckpt)))
    a = create_model("dicgan", weights=tmp_path / "a" / "last.safetensors").state_dict()
    b = create_model("dicgan", weights=tmp_path / "b" / "last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "val_sharpness" in read_metadata(tmp_path / "a" / "last.safetensors")


def test_real_framing_runs_resume_exactly(fake_data_dir, tmp_path):
    framing = ("--real-framing",)
    train_mod.train(train_args(fake_data_dir, tmp_path / "a", *framing, "--iters", "3"))
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", *framing, "--iters", "2"))
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", *framing, "--iters", "3", "--resume",
                                str(tmp_path / "b" / "checkpoint.pt")))
    a = create_model("dic", weights=tmp_path / "a" / "last.safetensors").state_dict()
    b = create_model("dic", weights=tmp_path / "b" / "last.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the smallest faces it trained on go with the weights (the export hands them to routing)
    assert read_metadata(tmp_path / "a" / "last.safetensors")["min_input_ratio"] == "0.6"
