"""Panini-Net: the upstream parameter layout (strict loading of state dicts built from a transcription of
upstream's module tree), the non-fused modulated convolution against upstream's grouped form, sizes, and
export with a dynamic batch."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from models import create_model, model_io
from models.panini import PANINI_CONFIGS, ModulatedConv2d, Panini, PaniniConfig, load_official_panini
from models.weights import WeightsError


# --- a test-only transcription of upstream's module tree (panini.py + MMEditing's StyleGAN2): layout only ---
class _EqualLinear(nn.Module):  # EqualLinearActModule: linear.weight_orig (equalized lr hook), bias
    def __init__(self, i, o):
        super().__init__()
        self.linear = nn.Module()
        self.linear.weight_orig = nn.Parameter(torch.randn(o, i))
        self.bias = nn.Parameter(torch.zeros(o))


class _Kernel(nn.Module):  # Blur / UpsampleUpFIRDn: a 4x4 kernel buffer
    def __init__(self):
        super().__init__()
        self.register_buffer("kernel", torch.ones(4, 4) / 16)


class _ModConv(nn.Module):
    def __init__(self, i, o, k, upsample=False):
        super().__init__()
        self.style_modulation = _EqualLinear(512, i)
        self.weight_orig = nn.Parameter(torch.randn(1, o, i, k, k))
        if upsample:
            self.blur = _Kernel()


class _StyleConv(nn.Module):
    def __init__(self, i, o, upsample=False):
        super().__init__()
        self.conv = _ModConv(i, o, 3, upsample)
        self.noise_injector = nn.Module()
        self.noise_injector.weight = nn.Parameter(torch.zeros(1))
        self.activate = nn.Module()
        self.activate.bias = nn.Parameter(torch.zeros(o))


class _ToRGB(nn.Module):
    def __init__(self, i, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = _Kernel()
        self.conv = _ModConv(i, 3, 1)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))


class _StyleGANv2Generator(nn.Module):
    def __init__(self, out_size):
        super().__init__()
        ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64, 1024: 32}
        self.style_mapping = nn.Sequential(nn.Identity(), *(_EqualLinear(512, 512) for _ in range(8)))
        self.constant_input = nn.Module()
        self.constant_input.input = nn.Parameter(torch.randn(1, 512, 4, 4))
        self.conv1 = _StyleConv(512, 512)
        self.to_rgb1 = _ToRGB(512, upsample=False)
        self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        log_size, c_in = int(math.log2(out_size)), 512
        for i in range(3, log_size + 1):
            self.convs.append(_StyleConv(c_in, ch[2 ** i], upsample=True))
            self.convs.append(_StyleConv(ch[2 ** i], ch[2 ** i]))
            self.to_rgbs.append(_ToRGB(ch[2 ** i]))
            c_in = ch[2 ** i]
        for idx in range(log_size * 2 - 3):
            self.register_buffer(f"injected_noise_{idx}", torch.randn(1, 1, 2 ** ((idx + 5) // 2), 2 ** ((idx + 5) // 2)))


def _rdb(mid, growth):
    block = nn.Module()
    for i in range(5):
        block.add_module(f"conv{i + 1}", nn.Conv2d(mid + i * growth, mid if i == 4 else growth, 3, 1, 1))
    return block


def _rrdb_extractor(c, n):
    m = nn.Module()
    m.conv_first = nn.Conv2d(3, c, 3, 1, 1)
    m.body = nn.Sequential()
    for _ in range(n):
        rrdb = nn.Module()
        rrdb.rdb1, rrdb.rdb2, rrdb.rdb3 = _rdb(c, 32), _rdb(c, 32), _rdb(c, 32)
        m.body.append(rrdb)
    m.conv_body = nn.Conv2d(c, c, 3, 1, 1)
    return m


def _cbam(c, r):
    m = nn.Module()
    m.fea_preprocess = nn.Conv2d(c, c, 3, 1, 1)
    m.ChannelGate = nn.Module()
    m.ChannelGate.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c))
    m.SpatialGate = nn.Module()
    m.SpatialGate.spatial = nn.Module()
    m.SpatialGate.spatial.conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
    m.SpatialGate.spatial.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)
    return m


class _UpstreamPanini(nn.Module):
    """Panini_SR(in_size=64, out_size=1024) or Panini_MFR(in_size=512, out_size=1024) as constructed upstream."""

    def __init__(self, mfr=False):
        super().__init__()
        lrelu = lambda: nn.LeakyReLU(0.2, True)  # noqa: E731
        self.generator = _StyleGANv2Generator(1024)
        if mfr:
            self.resize = nn.AdaptiveAvgPool2d((256, 256))
            e = []
            for i, o, s in ((3, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1)):
                e += [nn.Conv2d(i, o, 3, s, 1), nn.BatchNorm2d(o), nn.LeakyReLU(0.1, True)]
            self.deg_encoder = nn.Module()
            self.deg_encoder.E = nn.Sequential(*e, nn.AdaptiveAvgPool2d(1))
            self.deg_encoder.mlp = nn.Sequential(nn.Linear(256, 256), nn.LeakyReLU(0.1, True), nn.Linear(256, 256))
            first = [_rrdb_extractor(8, 2), _cbam(8, 2), nn.Conv2d(8, 32, 3, 1, 1), lrelu(),
                     nn.Conv2d(32, 64, 3, 2, 1), lrelu(), nn.Conv2d(64, 128, 3, 2, 1), lrelu(),
                     nn.Conv2d(128, 512, 3, 2, 1), lrelu()]
        else:
            self.choice_vector = nn.Parameter(torch.randn(1, 256))
            first = [_rrdb_extractor(64, 23), _cbam(64, 8), nn.Conv2d(64, 512, 3, 1, 1), lrelu()]
        self.encoder = nn.ModuleList([nn.Sequential(*first)])
        for _ in range(4):
            self.encoder.append(nn.Sequential(nn.Conv2d(512, 512, 3, 2, 1), lrelu()))
        self.encoder.append(nn.Sequential(nn.Conv2d(512, 256, 3, 1, 1), lrelu(), nn.Flatten(),
                                          nn.Linear(16 * 256, 18 * 512)))
        self.AFS_maskGen = nn.Module()
        self.AFS_maskGen.mapping = nn.Sequential(nn.Linear(256, 256), nn.LeakyReLU(0.1, True),
                                                 nn.Linear(256, 512 * 5 * 2))
        self.fusion_out = nn.ModuleList(nn.Conv2d(512, 512, 3, 1, 1) for _ in range(5))


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name, mfr", [("default", False), ("mfr", True)])
def test_official_layout_matches_upstream_and_loads_strictly(name, mfr):
    upstream = _UpstreamPanini(mfr=mfr)
    ours = Panini(PANINI_CONFIGS[name])
    assert _shapes(upstream) == _shapes(ours)
    # MMEditing saves the restorer: the generator's keys carry "generator." and the discriminator sits beside.
    saved = {f"generator.{k}": v for k, v in upstream.state_dict().items()}
    saved["discriminator.convs.0.weight"] = torch.zeros(1)
    load_official_panini(ours, saved)
    assert torch.equal(ours.generator.convs[3].conv.weight_orig, upstream.generator.convs[3].conv.weight_orig)
    saved.pop("generator.fusion_out.2.bias")
    with pytest.raises(WeightsError, match="missing: fusion_out.2.bias"):
        load_official_panini(ours, saved)


def _grouped_modconv(conv: ModulatedConv2d, x, style):
    """Upstream's forward: the batch folded into the groups of one convolution (not exportable with a
    dynamic batch)."""
    n, c, h, w = x.shape
    s = conv.style_modulation(style).view(n, 1, c, 1, 1)
    weight = conv.weight_orig * conv.scale * s
    out_c, k = weight.shape[1], weight.shape[-1]
    if conv.demodulate:
        weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + conv.eps).view(n, out_c, 1, 1, 1)
    if conv.upsample:
        weight = weight.transpose(1, 2).reshape(n * c, out_c, k, k)
        out = F.conv_transpose2d(x.reshape(1, n * c, h, w), weight, stride=2, groups=n)
        return conv.blur(out.reshape(n, out_c, *out.shape[-2:]))
    out = F.conv2d(x.reshape(1, n * c, h, w), weight.reshape(n * out_c, c, k, k), padding=k // 2, groups=n)
    return out.reshape(n, out_c, h, w)


@pytest.mark.parametrize("kernel, demodulate, upsample", [(3, True, False), (3, True, True), (1, False, False)])
def test_non_fused_modulated_conv_equals_upstream_grouped_form(kernel, demodulate, upsample):
    torch.manual_seed(0)
    conv = ModulatedConv2d(16, 8, kernel, 32, demodulate=demodulate, upsample=upsample)
    x, style = torch.randn(3, 16, 8, 8), torch.randn(3, 32)
    with torch.no_grad():
        ours, reference = conv(x, style), _grouped_modconv(conv, x, style)
    assert ours.shape == reference.shape == (3, 8, 16 if upsample else 8, 16 if upsample else 8)
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()


def test_sizes_and_io():
    count = lambda cfg: sum(p.numel() for p in Panini(cfg).parameters())  # noqa: E731
    assert 4.0e6 < count(PANINI_CONFIGS["lite"]) < 4.5e6
    assert (model_io("panini", PANINI_CONFIGS["lite"]).input_size,
            model_io("panini", PANINI_CONFIGS["lite"]).output_size) == (16, 128)
    io = model_io("panini", PANINI_CONFIGS["default"])
    assert (io.input_size, io.output_size, io.scale, io.is_recurrent) == (64, 1024, 16, False)
    with pytest.raises(ValueError, match="one width"):
        PaniniConfig(in_size=64, out_size=256, max_channels=512, channel_multiplier=0.5)
    with pytest.raises(ValueError, match="in_size 512"):
        PaniniConfig(in_size=64, variant="mfr")


def test_forward_is_deterministic_and_checks_its_input_size():
    model = create_model("panini", "lite")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        first, second = model(x), model(x)
        alone = model(x[1:])
    assert first.shape == (2, 3, 128, 128) and torch.equal(first, second)
    assert torch.allclose(first[1:], alone, atol=1e-5)  # samples do not mix across the batch
    with pytest.raises(ValueError, match="16x16"):
        model(torch.rand(1, 3, 32, 32))


def _lite_weights(tmp_path):
    from training.checkpoints import save_weights

    torch.manual_seed(0)
    model = create_model("panini", "lite")
    return save_weights(model, tmp_path / "lite.safetensors", metadata={"config": model.config.to_dict()})


def test_lite_exports_with_a_dynamic_batch_and_parity(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from export.build import build

    result = build("panini", weights=str(_lite_weights(tmp_path)), outdir=tmp_path)
    assert result.manifest.checks["parity"]["passed"]
    assert result.manifest.outputs[0].shape[1:] == (3, 128, 128)
    onnx_path = tmp_path / result.manifest.onnx
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = create_model("panini", weights=tmp_path / "lite.safetensors")
    for batch in (1, 5):
        x = np.random.default_rng(batch).random((batch, 3, 16, 16), dtype=np.float32)
        got = session.run(None, {"lr": x})[0]
        with torch.no_grad():
            want = model(torch.from_numpy(x)).clamp(0, 1).numpy()
        assert got.shape == (batch, 3, 128, 128)
        assert np.abs(got - want).max() < 1e-4


def test_training_task_takes_lite_and_refuses_sizes_the_shared_faces_lack():
    from training.tasks import Batch, get_task

    task = get_task("panini")
    with pytest.raises(ValueError, match="out_size 128"):
        task.build_model(PANINI_CONFIGS["default"])
    model = task.build_model(PANINI_CONFIGS["lite"])
    assert task.lr_size == 16
    torch.manual_seed(0)
    batch = Batch(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 128, 128), torch.zeros(2, 68, 2))
    loss, parts = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and parts["l1"] > 0
    assert model.choice_vector.grad is not None and model.generator.conv1.conv.weight_orig.grad.abs().sum() > 0
    (sr,), heatmaps = task.predict(model, batch.lr)
    assert sr.shape == (2, 3, 128, 128) and heatmaps == [] and 0 <= sr.min() and sr.max() <= 1
