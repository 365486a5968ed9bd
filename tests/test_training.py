"""Training / evaluation toolkit tests (CPU, small). Real-data tests skip when ../shared is absent."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import create_model
from models.dic import heatmap_peaks
from training import train as train_mod
from training.data import (DEFAULT_DATA_DIR, FLIP_PERMUTATION_68, DataError, flip_landmarks,
                           load_split, make_heatmaps)
from training.evaluate import evaluate_bicubic, evaluate_model
from training.metrics import landmark_nme, psnr, rgb_to_y, ssim, y_psnr_ssim
from training.tasks import get_task, sample_batch
from tests.helpers import MICRO, fake_split, train_args

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "weights" / "dic_utk_cpu_demo.safetensors"
HAVE_DATA = (DEFAULT_DATA_DIR / "splits.json").is_file()
needs_data = pytest.mark.skipif(not HAVE_DATA, reason="../shared/data/faces-utk not available")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


SLICE50_BICUBIC = (24.1334, 0.68124)  # bicubic on the first 50 test images (Y-PSNR dB, SSIM)


# --- metrics ----------------------------------------------------------------------------------------


def test_identical_images_give_inf_psnr_and_unit_ssim():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)
    p, s = y_psnr_ssim(img, img)
    assert p == math.inf
    assert s == pytest.approx(1.0, abs=1e-12)


def test_known_metric_values():
    # BT.601 (MATLAB rgb2ycbcr) luma: white -> 235, black -> 16
    assert rgb_to_y(np.array([255, 255, 255], np.uint8)) == pytest.approx(235.0)
    assert rgb_to_y(np.array([0, 0, 0], np.uint8)) == pytest.approx(16.0)
    # grey 100 vs grey 110: Y = round(16 + v * 219 / 255) = 102 vs 110 (official: rounded uint8 Y)
    a = np.full((64, 64, 3), 100, np.uint8)
    b = np.full((64, 64, 3), 110, np.uint8)
    assert rgb_to_y(a)[0, 0] == 102 and rgb_to_y(b)[0, 0] == 110
    p, s = y_psnr_ssim(b, a)
    assert p == pytest.approx(20 * math.log10(255 / 8), abs=1e-9)
    c1 = (0.01 * 255) ** 2
    ya, yb = 256 - 102, 256 - 110  # the official uint8 "Y * 255" wraps to 256 - Y
    assert s == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1), abs=1e-9)  # flat: luminance term only
    s_plain = y_psnr_ssim(b, a, official_wrap=False)[1]
    assert s_plain == pytest.approx((2 * 102 * 110 + c1) / (102**2 + 110**2 + c1), abs=1e-9)
    # PSNR of a known MSE: peak 255, MSE 1 -> 48.13 dB
    assert psnr(np.zeros((4, 4)), np.ones((4, 4))) == pytest.approx(20 * math.log10(255), abs=1e-12)
    # the 8-px border is cropped: damage confined to the border leaves the score infinite
    c = a.copy()
    c[:8] = 0
    assert y_psnr_ssim(c, a)[0] == math.inf
    # SSIM falls with noise and is symmetric
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (40, 40))
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255)
    assert 0 < ssim(x, y) < 1 and ssim(x, y) == pytest.approx(ssim(y, x))


def test_landmark_nme():
    target = np.zeros((1, 68, 2))
    target[0, 36] = (30, 50)
    target[0, 45] = (90, 50)  # eye-corner distance 60
    pred = target + np.array([3.0, 4.0])  # every point 5 px off
    assert landmark_nme(pred, target)[0] == pytest.approx(5 / 60)


@needs_data
def test_bicubic_reference_on_test_slice(split_cache):
    split = load_split("test", cache_dir=split_cache).subset(50)
    row = evaluate_bicubic(split)
    # independent recomputation with plain numpy (per-pixel loop-free, rounded Y, 8-px crop, MSE -> PSNR)
    ps = []
    for lr, hr in zip(split.lr, split.hr):
        up = np.asarray(Image.fromarray(lr).resize((128, 128), Image.BICUBIC)).astype(np.float64)
        y1 = np.round(16 + (65.481 * up[..., 0] + 128.553 * up[..., 1] + 24.966 * up[..., 2]) / 255)
        h = hr.astype(np.float64)
        y2 = np.round(16 + (65.481 * h[..., 0] + 128.553 * h[..., 1] + 24.966 * h[..., 2]) / 255)
        mse = np.mean((y1[8:-8, 8:-8] - y2[8:-8, 8:-8]) ** 2)
        ps.append(10 * math.log10(255.0**2 / mse))
    assert row["psnr"] == pytest.approx(np.mean(ps), abs=1e-9)
    # measured with this code on the first 50 test images (the whole split: see the next test)
    assert row["psnr"] == pytest.approx(SLICE50_BICUBIC[0], abs=0.005)
    assert row["ssim"] == pytest.approx(SLICE50_BICUBIC[1], abs=0.0005)


@needs_data
def test_bicubic_reproduces_readme_reference_on_full_test_split(split_cache):
    row = evaluate_bicubic(load_split("test", cache_dir=split_cache))
    assert row["images"] == 500
    assert round(row["psnr"], 2) == 24.12  # README: 24.12 dB / 0.666 (we get 24.117 / 0.6664)
    assert round(row["ssim"], 3) == 0.666


# --- heatmaps and flips --------------------------------------------------------------------------------


def test_heatmap_peak_at_landmark():
    lm = torch.tensor([[[40.0, 60.0], [0.0, 124.0], [80.0, 8.0]]])
    hm = make_heatmaps(lm)
    assert hm.shape == (1, 3, 32, 32)
    assert hm[0, 0, 15, 10] == pytest.approx(1.0)  # row = y/4, column = x/4
    assert torch.equal(heatmap_peaks(hm), lm)
    assert hm[0, 0, 15, 11] == pytest.approx(math.exp(-0.5))  # sigma = 1 heatmap pixel


@needs_data
def test_nme_of_gt_heatmaps_is_only_quantisation(split_cache):
    split = load_split("test", cache_dir=split_cache).subset(100)
    pred = heatmap_peaks(make_heatmaps(torch.from_numpy(split.landmarks))).numpy()
    assert landmark_nme(pred, split.landmarks).mean() < 0.04  # 4-px grid, ~50-px eye distance


def test_flip_permutation_is_an_involution():
    perm = FLIP_PERMUTATION_68
    assert sorted(perm) == list(range(68))
    assert np.array_equal(perm[perm], np.arange(68))
    assert perm[36] == 45 and perm[39] == 42 and perm[40] == 47 and perm[41] == 46
    assert perm[0] == 16 and perm[8] == 8 and perm[17] == 26 and perm[27] == 27 and perm[33] == 33
    assert perm[48] == 54 and perm[51] == 51 and perm[55] == 59 and perm[60] == 64 and perm[65] == 67
    lm = np.random.default_rng(0).uniform(0, 127, (3, 68, 2)).astype(np.float32)
    assert np.allclose(flip_landmarks(flip_landmarks(lm, 128), 128), lm)


@needs_data
def test_flipped_landmarks_land_on_the_mirrored_features(split_cache):
    split = load_split("val", cache_dir=split_cache).subset(8)
    batch = sample_batch(split, np.arange(8), flips=np.ones(8, bool))
    assert torch.equal(batch.hr, torch.from_numpy(split.hr[:, :, ::-1].copy()).permute(0, 3, 1, 2).float() / 255)
    lm = batch.landmarks.numpy()
    orig = split.landmarks
    for left, right in ((36, 45), (39, 42), (0, 16), (48, 54), (17, 26), (31, 35)):
        # iBUG order is by face side: the lower index stays on the image's left after a flip
        assert (orig[:, left, 0] < orig[:, right, 0]).all()
        assert (lm[:, left, 0] < lm[:, right, 0]).all()
    # the flipped left-eye centre is where the original right eye was, mirrored
    eye_l = lm[:, 36:42].mean(1)
    eye_r_orig = orig[:, 42:48].mean(1)
    assert np.allclose(eye_l[:, 0], 127 - eye_r_orig[:, 0], atol=1e-4)
    assert np.allclose(eye_l[:, 1], eye_r_orig[:, 1], atol=1e-4)
    # the image content around each flipped landmark is the mirrored content of its source point
    img, img_f = split.hr[0].astype(int), batch.hr[0].permute(1, 2, 0).numpy() * 255
    for k in (36, 45, 30, 48):
        x, y = np.round(lm[0, k]).astype(int)
        xs, ys = np.round(orig[0, FLIP_PERMUTATION_68[k]]).astype(int)
        assert abs(img_f[y, x] - img[ys, 127 - x]).max() < 1e-3 and abs(127 - x - xs) <= 1


# --- training loop ------------------------------------------------------------------------------------


def test_loss_goes_down_on_a_fixed_batch():
    torch.manual_seed(0)
    task = get_task("dic")
    model = task.build_model(task.resolve_config(MICRO))
    batch = sample_batch(fake_split(), np.arange(4))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(8):
        loss, parts = task.loss(model, batch)
        assert set(parts) == {"l1", "heatmap"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_checkpoint_round_trip_and_exact_resume(fake_data_dir, tmp_path):
    straight = train_mod.train(train_args(fake_data_dir, tmp_path / "a", "--iters", "4"))
    assert straight["iterations"] == 4
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", "--iters", "2"))
    ckpt = tmp_path / "b" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)  # plain tensors / primitives only
    assert state["iteration"] == 2
    train_mod.train(train_args(fake_data_dir, tmp_path / "b", "--iters", "4", "--resume", str(ckpt)))
    a = create_model("dic", weights=tmp_path / "a" / "last.safetensors").state_dict()
    b = create_model("dic", weights=tmp_path / "b" / "last.safetensors").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert json.loads((tmp_path / "a" / "history.json").read_text())[-1]["val_psnr"] == pytest.approx(
        json.loads((tmp_path / "b" / "history.json").read_text())[-1]["val_psnr"])
    # best weights carry config + iteration + val psnr
    from models.weights import read_metadata

    meta = read_metadata(tmp_path / "a" / "best.safetensors")
    assert json.loads(meta["config"])["num_features"] == 8 and "val_psnr" in meta and "iteration" in meta


def test_ema_weights_are_the_running_average_and_resume_exactly(fake_data_dir, tmp_path):
    train_mod.train(train_args(fake_data_dir, tmp_path / "start", "--iters", "1"))
    start = tmp_path / "start" / "last.safetensors"
    init = ["--init-weights", str(start), "--ema", "0.5"]
    train_mod.train(train_args(fake_data_dir, tmp_path / "a", "--iters", "1", *init))
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    before = create_model("dic", weights=start).state_dict()
    saved = create_model("dic", weights=tmp_path / "a" / "last.safetensors").state_dict()
    trained = dict(create_model("dic", weights=start).named_parameters())
    for name in trained:  # one step with decay 0.5: half the start, half the trained weights
        assert torch.allclose(saved[name], 0.5 * before[name] + 0.5 * state["model"][name], atol=1e-6), name
        assert torch.equal(saved[name], state["ema"][name]), name
    assert any(not torch.equal(saved[n], state["model"][n]) for n in trained)

    train_mod.train(train_args(fake_data_dir, tmp_path / "b", "--iters", "3", *init))
    train_mod.train(train_args(fake_data_dir, tmp_path / "c", "--iters", "2", *init))
    train_mod.train(train_args(fake_data_dir, tmp_path / "c", "--iters", "3", "--ema", "0.5",
                                "--resume", str(tmp_path / "c" / "checkpoint.pt")))
    b = create_model("dic", weights=tmp_path / "b" / "last.safetensors").state_dict()
    c = create_model("dic", weights=tmp_path / "c" / "last.safetensors").state_dict()
    for k in b:
        assert torch.equal(b[k], c[k]), k


def test_resume_with_another_config_is_refused(fake_data_dir, tmp_path):
    train_mod.train(train_args(fake_data_dir, tmp_path / "a", "--iters", "1", "--val-every", "1"))
    other = dict(MICRO, num_features=12)
    args = train_mod.parse_args(["--config", json.dumps(other), "--data", str(fake_data_dir), "--cache", "",
                                 "--out", str(tmp_path / "c"), "--resume", str(tmp_path / "a" / "checkpoint.pt")])
    with pytest.raises(train_mod.ResumeError, match="another config.*num_features"):
        train_mod.train(args)


def test_reschedule_on_resume_replaces_milestones(fake_data_dir, tmp_path):
    train_mod.train(train_args(fake_data_dir, tmp_path / "a", "--iters", "2"))
    args = train_args(fake_data_dir, tmp_path / "a", "--iters", "3", "--milestones", "1", "--gamma", "0.1",
                       "--resume", str(tmp_path / "a" / "checkpoint.pt"), "--reschedule")
    train_mod.train(args)
    state = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == 3
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_undecodable_images_are_skipped_and_counted(fake_data_dir):
    split = load_split("train", fake_data_dir)
    assert len(split) == 9 and split.skipped == 1
    assert split.hr.shape == (9, 128, 128, 3) and split.lr.shape == (9, 16, 16, 3)


def test_missing_data_dir_message(tmp_path, capsys):
    with pytest.raises(DataError, match=r"\.\./shared/data/faces-utk"):
        load_split("train", tmp_path / "nowhere")
    assert train_mod.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o"), "--cache", ""]) == 2


def test_missing_landmarks_is_an_error(fake_data_dir, tmp_path):
    import shutil

    root = tmp_path / "faces"
    shutil.copytree(fake_data_dir, root)
    splits = json.loads((root / "splits.json").read_text())
    splits["val"].append("unlabelled.jpg")
    (root / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(DataError, match="no landmarks"):
        load_split("val", root)


# --- the shipped CPU demonstration weights ---------------------------------------------------------------


@needs_data
@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped weights absent")
def test_shipped_weights_beat_bicubic_on_test_slice(split_cache):
    split = load_split("test", cache_dir=split_cache).subset(50)
    model = create_model("dic", weights=SHIPPED)
    rows = evaluate_model(model, split)
    bicubic = evaluate_bicubic(split)
    assert rows[-1]["psnr"] > bicubic["psnr"] + 0.1, (rows, bicubic)
    assert rows[-1]["ssim"] > bicubic["ssim"]


@pytest.mark.parametrize("name, config", [("dic", "tiny"), ("pfsr", "tiny"), ("msfsr", "lite"), ("panini", "lite")])
def test_every_16_px_model_evaluates(name, config):
    """training.evaluate runs any registered model (not only DIC): the common model interface holds."""
    from models import create_model
    from training.evaluate import evaluate_model

    torch.manual_seed(0)
    rows = evaluate_model(create_model(name, config), fake_split(n=2), batch_size=2)
    assert rows and all(np.isfinite(row["psnr"]) for row in rows)
