"""DIC architecture: upstream key layout, shapes, small-config forward, strict weight loading."""

import pytest
import torch

from models import WeightsError, create_model, list_models, load_landmark_weights, load_weights
from models.dic import DIC, DIC_CONFIGS, DICConfig, GROUPS_194, merge_heatmaps, heatmap_peaks, attention_groups
from models.weights import read_state_dict
from training.checkpoints import save_weights


@pytest.fixture(scope="module")
def default_state():
    return DIC().state_dict()


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return DIC(DIC_CONFIGS["tiny"]).eval()


def test_default_config_matches_upstream_counts(default_state):
    assert len(default_state) == 296
    assert sum(v.numel() for v in default_state.values()) == 21_803_849
    assert {k.split(".")[0] for k in default_state} == {"conv_in", "first_block", "block", "out", "conv_out", "HG"}


@pytest.mark.parametrize("key, shape", [
    ("conv_in.0.weight", (192, 3, 3, 3)),
    ("conv_in.1.weight", (1,)),  # PReLU, one shared slope
    ("first_block.compress_in.0.weight", (48, 48, 1, 1)),
    ("first_block.upBlocks.5.0.weight", (48, 48, 12, 12)),  # ConvTranspose k12 s8
    ("first_block.downBlocks.0.0.weight", (48, 48, 12, 12)),
    ("first_block.uptranBlocks.4.0.weight", (48, 288, 1, 1)),
    ("first_block.compress_out.0.weight", (48, 288, 1, 1)),
    ("block.compress_in.0.weight", (48, 96, 1, 1)),
    ("block.fusion_block.conv_in.0.weight", (240, 48, 1, 1)),
    ("block.fusion_block.resnet.6.res.2.weight", (240, 48, 3, 3)),  # grouped per part (5 groups)
    ("out.0.weight", (48, 48, 8, 8)),
    ("conv_out.0.weight", (3, 48, 3, 3)),
    ("HG.pre_conv_block.0.weight", (64, 3, 7, 7)),
    ("HG.pre_conv_block.2.skip_layer.weight", (128, 64, 1, 1)),
    ("HG.compress_in.weight", (512, 512, 1, 1)),
    ("HG.hg.res4_1.conv_block.3.weight", (512, 256, 1, 1)),
    ("HG.hg.res_center.conv_block.2.weight", (256, 256, 3, 3)),
    ("HG.hg_conv_out.1.conv_block.0.weight", (256, 256, 1, 1)),
    ("HG.hg_conv_out.2.weight", (68, 256, 1, 1)),
])
def test_upstream_key_names_and_shapes(default_state, key, shape):
    assert tuple(default_state[key].shape) == shape


def test_prelu_initial_slope_and_mean(default_state):
    assert default_state["conv_in.1.weight"].item() == pytest.approx(0.2)
    model = DIC(DIC_CONFIGS["tiny"])
    assert model.rgb_mean.flatten().tolist() == pytest.approx([0.509, 0.424, 0.378])


def test_small_config_forward_shapes(tiny_model):
    lr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        sr, heatmaps = tiny_model(lr)
    steps = tiny_model.config.num_steps
    assert len(sr) == len(heatmaps) == steps
    assert all(s.shape == (2, 3, 128, 128) for s in sr)
    assert all(h.shape == (2, 68, 32, 32) for h in heatmaps)
    with torch.no_grad():
        sr_short, hm_short = tiny_model.unroll(lr, steps=2, last_heatmap=False)
    assert len(sr_short) == 2 and len(hm_short) == 1
    torch.testing.assert_close(sr_short[1], sr[1])  # unrolling fewer steps is a prefix of the full run


def test_forward_is_stateless(tiny_model):
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        first = tiny_model(a)[0][-1]
        tiny_model(b)
        again = tiny_model(a)[0][-1]
    torch.testing.assert_close(first, again, rtol=0, atol=0)


def test_steps_out_of_range(tiny_model):
    with pytest.raises(ValueError, match="steps must be in 1..3"):
        tiny_model.unroll(torch.rand(1, 3, 16, 16), steps=4)


def test_merge_heatmaps_groups_and_normalisation():
    heatmaps = torch.zeros(1, 68, 4, 4)
    heatmaps[0, 36, 1, 1] = 2.0  # left eye point, peak 2 -> normalised to 1
    heatmaps[0, 60, 2, 2] = 0.01  # mouth point below the 0.05 floor -> 0.01 / 0.05
    parts = merge_heatmaps(heatmaps, attention_groups(68))
    assert parts.shape == (1, 5, 4, 4)
    assert parts[0, 0, 1, 1].item() == pytest.approx(1.0)
    assert parts[0, 3, 2, 2].item() == pytest.approx(0.2)
    assert parts[0, [1, 2, 4]].abs().sum().item() == 0


def test_helen_194_grouping():
    heatmaps = torch.ones(1, 194, 2, 2)
    parts = merge_heatmaps(heatmaps, GROUPS_194)
    assert parts[0, :, 0, 0].tolist() == [38, 38, 16, 55, 40]
    model = DIC(DICConfig(num_features=8, num_groups=1, hg_num_feature=16, num_fusion_block=1,
                          num_steps=2, hg_num_keypoints=194))
    with torch.no_grad():
        sr, hm = model(torch.rand(1, 3, 16, 16))
    assert hm[-1].shape == (1, 194, 32, 32)


def test_heatmap_peaks_in_output_pixels():
    heatmaps = torch.zeros(1, 2, 32, 32)
    heatmaps[0, 0, 5, 7] = 1  # y=5, x=7
    heatmaps[0, 1, 31, 0] = 1
    assert heatmap_peaks(heatmaps).tolist() == [[[28.0, 20.0], [0.0, 124.0]]]


def test_bad_config_values():
    with pytest.raises(ValueError, match="scale=8"):
        DICConfig(scale=4)
    with pytest.raises(ValueError, match="unknown DIC config keys"):
        DICConfig.from_dict({"num_feature": 3})


def test_registry():
    assert list_models() == ["dic", "dicgan", "msfsr", "panini", "pfsr", "pfsr_x4"]
    with pytest.raises(ValueError, match="Did you mean 'dic'"):
        create_model("dci")


# --- weights ----------------------------------------------------------------------------------------


def _outputs(model, seed=1):
    lr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(lr)[0][-1]


@pytest.mark.parametrize("wrapper", ["state_dict", "netG", None])
def test_loads_upstream_checkpoint_layouts(tmp_path, tiny_model, wrapper):
    state = tiny_model.state_dict()
    # Upstream DIC saves {"state_dict", "optimizer", "step", ...}; DICGAN saves {"netG", ...}.
    payload = state if wrapper is None else {wrapper: state, "step": 100, "best_pred": 27.5, "records": {"psnr": [1.0]}}
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    name = "dicgan" if wrapper == "netG" else "dic"
    loaded = create_model(name, config="tiny", weights=path)
    torch.testing.assert_close(_outputs(loaded), _outputs(tiny_model), rtol=0, atol=0)


def test_dataparallel_prefix_is_stripped(tmp_path, tiny_model):
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tiny_model.state_dict().items()}}, path)
    assert set(read_state_dict(path)) == set(tiny_model.state_dict())


def test_landmark_net_checkpoint(tmp_path, tiny_model):
    path = tmp_path / "FB_HG_68.pth"
    torch.save(tiny_model.HG.state_dict(), path)  # raw HG weights without the "HG." prefix
    fresh = DIC(DIC_CONFIGS["tiny"])
    with pytest.raises(WeightsError, match="only the landmark hourglass"):
        load_weights(fresh, path)
    load_landmark_weights(fresh, path)
    for key, value in tiny_model.HG.state_dict().items():
        torch.testing.assert_close(fresh.HG.state_dict()[key], value)


def test_safetensors_round_trip_with_config(tmp_path, tiny_model):
    path = save_weights(tiny_model, tmp_path / "w.safetensors", metadata={"config": tiny_model.config.to_dict()})
    loaded = create_model("dic", weights=path)  # config read from the file
    assert loaded.config == tiny_model.config
    torch.testing.assert_close(_outputs(loaded), _outputs(tiny_model), rtol=0, atol=0)


def test_strict_load_names_missing_unexpected_and_shapes(tmp_path, tiny_model):
    state = dict(tiny_model.state_dict())
    state["conv_in.0.weights"] = state.pop("conv_in.0.weight")
    path = tmp_path / "renamed.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        create_model("dic", config="tiny", weights=path)
    assert "1 missing: conv_in.0.weight" in str(err.value)
    assert "1 unexpected: conv_in.0.weights" in str(err.value)

    state = dict(tiny_model.state_dict())
    state["conv_in.0.weight"] = torch.zeros(96, 3, 3, 3)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save(state, wrong_shape)
    with pytest.raises(WeightsError, match=r"1 shape mismatch: conv_in.0.weight: file \(96, 3, 3, 3\) vs model \(64, 3, 3, 3\)"):
        create_model("dic", config="tiny", weights=wrong_shape)


class _NotATensor:
    pass


class _RunsACommand:
    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


def test_pickled_objects_are_refused(tmp_path, tiny_model):
    path = tmp_path / "unsafe.pth"
    torch.save({"state_dict": tiny_model.state_dict(), "opt": _NotATensor()}, path)
    with pytest.raises(WeightsError, match="refused .* full unpickling"):
        read_state_dict(path)
    # A checkpoint that would run a command (a blocked module: newer torch words that error differently)
    # is refused as unsafe, not reported as a corrupt file.
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": _RunsACommand()}, evil)
    with pytest.raises(WeightsError, match="refused .* full unpickling of (posix|os).system"):
        read_state_dict(evil)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_truncated_and_corrupt_files(tmp_path, tiny_model, suffix):
    good = tmp_path / f"good{suffix}"
    if suffix == ".pth":
        torch.save(tiny_model.state_dict(), good)
    else:
        save_weights(tiny_model, good)
    data = good.read_bytes()
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(data[: len(data) // 2])
    corrupt = tmp_path / f"corrupt{suffix}"
    corrupt.write_bytes(bytes(range(256)) * 64)
    for path in (truncated, corrupt):
        with pytest.raises(WeightsError, match="truncated or corrupt"):
            read_state_dict(path)


def test_missing_and_unknown_format(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
    other = tmp_path / "w.bin"
    other.write_bytes(b"x")
    with pytest.raises(WeightsError, match="unknown weights format"):
        read_state_dict(other)


def test_checkpoint_without_weights(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"step": 3, "epoch": 1}, path)
    with pytest.raises(WeightsError, match="no weights under"):
        read_state_dict(path)
