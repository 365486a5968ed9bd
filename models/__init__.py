"""Model registry: `create_model(name, config=None, weights=None)` and `list_models()`.

Models are registered explicitly here (no folder scanning). Every model takes RGB in [0, 1] and
returns a list of per-step SR images (see each architecture file for the exact contract).
"""
from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch.nn as nn

from .dic import DIC, DIC_CONFIGS, DICConfig
from .io import ExtraOutput, ModelIO
from .msfsr import BOUNDARIES_68, MSFSR, MSFSR_CONFIGS, MSFSRConfig
from .panini import PANINI_CONFIGS, Panini, PaniniConfig
from .pfsr import PFSR, PFSR_CONFIGS, PFSR_X4_CONFIGS, PFSRConfig
from .weights import WeightsError, load_into, read_metadata, read_state_dict

__all__ = [
    "create_model", "list_models", "model_spec", "model_io", "shipped_weights", "camera_grade_weights",
    "fused_grade_weights", "load_weights",
    "ModelIO",
    "load_landmark_weights", "WeightsError", "DIC", "DICConfig", "PFSR", "PFSRConfig", "MSFSR", "MSFSRConfig",
    "Panini", "PaniniConfig",
]

log = logging.getLogger(__name__)
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    build: Callable[[object], nn.Module]
    configs: dict
    config_from_dict: Callable[[dict], object]
    io: Callable[[object], ModelIO]  # config -> the model's declared I/O
    shipped: tuple[str, ...]  # file names in models/weights/, best first
    description: str
    # camera-grade twin of the first shipped file (trained on training.degrade's recordings, with a
    # runtime.recording gate in its metadata): export.build exports it beside the default, the runtime picks per face
    camera: str | None = None
    # fused-grade twin of the first shipped file (trained on bursts fused as `--fuse-frames` fuses a track's
    # frames, training.burst): export.build exports it beside the default, the runtime uses it for fused faces
    fused: str | None = None


def _build_dic(config) -> nn.Module:
    return DIC(config)


def _dic_io(config: DICConfig) -> ModelIO:
    out = 16 * config.scale
    landmarks = ExtraOutput("landmarks", (config.hg_num_keypoints, 2), (0.0, float(out)),
                            "(x, y) in output pixels, arg-max of the last step's heatmaps")
    return ModelIO(input_size=16, scale=config.scale, recurrent_steps=config.num_steps, extra_outputs=(landmarks,))


def _pfsr_io(config: PFSRConfig) -> ModelIO:
    return ModelIO(input_size=config.input_size, scale=config.scale, folds_batchnorm=True, local=True)


_REGISTRY: dict[str, ModelSpec] = {}


def _register(spec: ModelSpec) -> None:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec


_register(ModelSpec("dic", _build_dic, DIC_CONFIGS, DICConfig.from_dict, _dic_io,
                    ("dic_utk.safetensors", "dic_utk_cpu_demo.safetensors"),
                    "DIC (CVPR 2020), 16->128, iterative SR + landmark collaboration", "dic_camera_utk.safetensors"))
# DICGAN is the DIC generator with adversarially fine-tuned weights.
_register(ModelSpec("dicgan", _build_dic, DIC_CONFIGS, DICConfig.from_dict, _dic_io, ("dicgan_utk.safetensors",),
                    "DICGAN (CVPR 2020): DIC generator, GAN-fine-tuned weights"))


_register(ModelSpec("pfsr", PFSR, PFSR_CONFIGS, PFSRConfig.from_dict, _pfsr_io,
                    ("pfsr_tiled_utk.safetensors", "pfsr_utk.safetensors"),
                    "PFSR (BMVC 2019), 16->128 in three progressive x2 steps, light (10.5 GFLOP at width 512)",
                    "pfsr_camera_utk.safetensors", "pfsr_fused_utk.safetensors"))
_register(ModelSpec("pfsr_x4", PFSR, PFSR_X4_CONFIGS, PFSRConfig.from_dict, _pfsr_io,
                    ("pfsr_x4_tiled_utk.safetensors", "pfsr_x4_utk.safetensors"),
                    "PFSR x4 variant (this project's), 32->128 in two progressive x2 steps, for 20-40 px faces",
                    "pfsr_x4_camera_utk.safetensors"))


def _msfsr_io(config: MSFSRConfig) -> ModelIO:
    side = config.input_size * config.scale // 2  # the last stage's input
    boundaries = ExtraOutput("boundaries", (len(BOUNDARIES_68), side, side), (0.0, 1.0),
                             "the last stage's facial boundary maps (jaw, brows, nose, eyes, lips) at its input size; "
                             "trained towards [0, 1], not clamped")
    # int8 (measured on 200 val faces, entropy calibration): every node quantized -0.49 dB. Each stage's
    # image-domain ends stay fp32: its first conv reads an 8-bit image (symmetric int8 keeps 7 bits of it), and
    # the Tanh outputs and residual/skip sums carry the image; -0.28 dB with them kept.
    return ModelIO(input_size=config.input_size, scale=config.scale, extra_outputs=(boundaries,),
                   int8_keep_ops=("Tanh", "Add"), int8_keep_weights=("*stages.*.BUM.0.weight",))


_register(ModelSpec("msfsr", MSFSR, MSFSR_CONFIGS, MSFSRConfig.from_dict, _msfsr_io, ("msfsr_utk.safetensors",),
                    "MSFSR (CVPRW 2020), 16->128 in three x2 stages guided by 11 facial boundary maps"))


def _panini_io(config: PaniniConfig) -> ModelIO:
    return ModelIO(input_size=config.in_size, scale=config.scale)


_register(ModelSpec("panini", Panini, PANINI_CONFIGS, PaniniConfig.from_dict, _panini_io, ("panini_utk.safetensors",),
                    "Panini-Net (AAAI 2022), StyleGAN2 decoder + degradation-aware feature interpolation; "
                    "official 64->1024 (SR) and 512->1024 (MFR), and a CPU-trained 16->128 lite"))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    spec = _REGISTRY.get(name.lower())
    if spec is None:
        close = difflib.get_close_matches(name.lower(), list(_REGISTRY), n=3)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}.{hint}")
    return spec


def model_io(name: str, config) -> ModelIO:
    """The declared I/O of model `name` built with `config` (a config object, as on `model.config`)."""
    return model_spec(name).io(config)


def shipped_weights(name: str) -> Path | None:
    """The best weights file shipped with the package for this model, or None."""
    for file_name in model_spec(name).shipped:
        path = WEIGHTS_DIR / file_name
        if path.is_file():
            return path
    return None


def camera_grade_weights(name: str) -> Path | None:
    """The shipped camera-grade twin of the model's default weights (`ModelSpec.camera`), or None."""
    return _shipped_file(model_spec(name).camera)


def fused_grade_weights(name: str) -> Path | None:
    """The shipped fused-grade twin of the model's default weights (`ModelSpec.fused`), or None."""
    return _shipped_file(model_spec(name).fused)


def _shipped_file(file_name: str | None) -> Path | None:
    path = WEIGHTS_DIR / file_name if file_name else None
    return path if path is not None and path.is_file() else None


def _resolve_config(spec: ModelSpec, config, weights: str | os.PathLike | None):
    if config is None and weights is not None:
        stored = read_metadata(weights).get("config")
        if stored:
            try:
                return spec.config_from_dict(json.loads(stored))
            except json.JSONDecodeError as err:
                raise WeightsError(f"{weights}: its metadata field 'config' is not JSON ({err.msg} at character "
                                   f"{err.pos}); the file was damaged or not written by this project. Pass "
                                   "--config NAME to build the architecture yourself.") from err
    if config is None:
        return spec.configs.get("default") or next(iter(spec.configs.values()))
    if isinstance(config, str):
        if config not in spec.configs:
            raise ValueError(f"unknown {spec.name} config {config!r}; available: {', '.join(spec.configs)}")
        return spec.configs[config]
    if isinstance(config, dict):
        return spec.config_from_dict(config)
    return config


def _check_weights_owner(spec: ModelSpec, weights: str | os.PathLike) -> None:
    """Refuse a project weights file whose metadata names another model (DIC and DICGAN share one generator)."""
    owner = read_metadata(weights).get("model", "").lower()
    other = _REGISTRY.get(owner)
    if other is None or other is spec:
        return
    if other.build is spec.build and other.configs is spec.configs:
        return
    raise WeightsError(f"{weights} holds {owner!r} weights (the file's metadata says so), not {spec.name!r} weights; "
                       f"use --model {owner}, or pass weights trained for {spec.name}.")


def _is_landmark_only(model: nn.Module, state: dict) -> bool:
    hg = getattr(model, "HG", None)
    return hg is not None and set(state) == set(hg.state_dict())


def load_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Strictly load a full-network checkpoint (.safetensors, or upstream .pth/.pt)."""
    state = read_state_dict(path)
    if _is_landmark_only(model, state):
        raise WeightsError(
            f"{path} holds only the landmark hourglass (e.g. FB_HG_68_CelebA.pth), not a full network; "
            "load it with models.load_landmark_weights() (training: --landmark-weights)."
        )
    load_into(model, state, source=f"weights {path}")


def load_landmark_weights(model: nn.Module, path: str | os.PathLike) -> None:
    """Load the upstream pretrained landmark net (raw hourglass weights, no "HG." prefix) into model.HG."""
    state = read_state_dict(path)
    if all(k.startswith("HG.") for k in state):
        state = {k[len("HG."):]: v for k, v in state.items()}
    load_into(model.HG, state, source=f"landmark weights {path}")


def create_model(name: str, config=None, weights: str | os.PathLike | None = None) -> nn.Module:
    """Build a registered model, optionally loading weights strictly.

    Args:
        name: registered model name (`list_models()`).
        config: a config name (e.g. "default", "small"), a dict, or a config object. When None and
            `weights` is a project safetensors file, the config stored in it is used.
        weights: path to weights; None leaves the random initialisation.
    """
    spec = model_spec(name)
    if weights is not None:
        _check_weights_owner(spec, weights)
    cfg = _resolve_config(spec, config, weights)
    model = spec.build(cfg)
    if weights is not None:
        load_weights(model, weights)
    return model.eval()
