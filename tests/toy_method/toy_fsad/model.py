"""ToyMethod: map(x) = scale * mean_c |x - mean_i support_i|, score = max of the map. No CLIP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fsadlib.data import CLIP_MEAN, CLIP_STD
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.output import AnomalyOutput


@dataclass(frozen=True)
class ToyConfig:
    image_size: int = 32


class PixelBackbone(nn.Module):
    """Stands in for the CLIP backbone: the input size and normalisation, nothing else."""

    random_weights = True   # no pretrained weights at all
    geometry = None         # the data set's image transform

    def __init__(self, image_size: int) -> None:
        super().__init__()
        self.image_size, self.mean, self.std = image_size, CLIP_MEAN, CLIP_STD
        self.register_buffer("anchor", torch.zeros(()), persistent=False)

    def effective_precision(self) -> str:
        """No autocast anywhere: always fp32."""
        return "fp32"

    @property
    def device(self) -> torch.device:
        return self.anchor.device


class ToyMethod(AnomalyMethod):
    name = "toy"
    Config = ToyConfig
    few_shot = True

    def __init__(self, config: ToyConfig, backbone_model=None) -> None:
        nn.Module.__init__(self)
        self.config, self.category = config, None
        self.backbone = PixelBackbone(config.image_size)
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.reference: torch.Tensor | None = None

    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        if supports is None:
            raise ValueError("toy is few-shot: setup_category needs supports")
        self.category, self.reference = category_key, supports.mean(0)

    def forward(self, images: torch.Tensor) -> AnomalyOutput:
        amap = self.scale * (images - self.reference).abs().mean(1)
        return AnomalyOutput(amap.flatten(1).amax(1), amap)
