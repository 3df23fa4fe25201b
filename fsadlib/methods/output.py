"""The one output type every method returns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AnomalyOutput:
    """What a method's ``forward`` returns for a batch of B images.

    pred_score:  [B]        image-level anomaly score (higher = more anomalous)
    anomaly_map: [B, H, W]  pixel-level anomaly map at the model input resolution; image-level-only
                             methods return a coarse map upsampled to H x W, never ``None``.
    """

    pred_score: torch.Tensor
    anomaly_map: torch.Tensor

    def __post_init__(self) -> None:
        if self.pred_score.ndim != 1:
            raise ValueError(f"pred_score must be [B], got {tuple(self.pred_score.shape)}")
        if self.anomaly_map.ndim != 3 or self.anomaly_map.shape[0] != self.pred_score.shape[0]:
            raise ValueError(f"anomaly_map must be [B, H, W] with B={self.pred_score.shape[0]}, "
                             f"got {tuple(self.anomaly_map.shape)}")

    def detach_cpu(self) -> AnomalyOutput:
        return AnomalyOutput(self.pred_score.detach().float().cpu(), self.anomaly_map.detach().float().cpu())
