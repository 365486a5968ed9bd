"""training.widen: a wider PFSR starts out computing exactly what the narrow one did, and its new channels learn."""
from __future__ import annotations

import pytest
import torch

from models import create_model
from training.widen import widen


@pytest.mark.parametrize("name", ["pfsr", "pfsr_x4"])
def test_the_widened_model_computes_what_the_narrow_one_did(name):
    torch.manual_seed(0)
    narrow = create_model(name, config="tiny").train()
    x = torch.rand(4, 3, narrow.config.input_size, narrow.config.input_size)
    narrow(x)  # BatchNorm running statistics that are not the defaults
    wide = widen(narrow, create_model(name, config={"width": 32, "scale": narrow.config.scale}))
    for mode in ("eval", "train"):
        getattr(narrow, mode)(), getattr(wide, mode)()
        with torch.no_grad():
            torch.testing.assert_close(wide(x), narrow(x), atol=1e-5, rtol=1e-5)


def test_the_new_channels_get_gradients_at_once():
    torch.manual_seed(0)
    narrow = create_model("pfsr_x4", config="tiny")
    wide = widen(narrow, create_model("pfsr_x4", config={"width": 32, "scale": 4})).train()
    x = torch.rand(4, 3, 32, 32)
    (wide(x) - torch.rand(4, 3, 128, 128)).abs().mean().backward()
    to_rgb = wide.to_rgb[-1].weight.grad  # [3, channels]: the new channels' (zero) fan-out is learning
    assert to_rgb[:, narrow.to_rgb[-1].weight.shape[1]:].abs().sum() > 0


def test_a_narrower_target_is_refused():
    with pytest.raises(ValueError, match="at least as large"):
        widen(create_model("pfsr_x4", config={"width": 32, "scale": 4}), create_model("pfsr_x4", config="tiny"))
