"""Losses shared by the methods (InCTRL, KAG-prompt, Bayes-PFL; FineGrainedAD's own live with it).

All take probabilities p in [0, 1] unless the name says logits; shapes are free (broadcast with the
target) and the result is a scalar mean.

Focal loss (Lin et al.), target y in {0, 1} (soft targets allowed):
    FL(p, y) = -alpha * [ y (1 - p)^gamma log p + (1 - y) p^gamma log(1 - p) ]
with p clamped to [eps, 1 - eps]. gamma = 0 and alpha = 1 give binary cross-entropy.

Soft Dice loss (per sample, smooth s):
    Dice(p, y) = 1 - (2 sum(p y) + s) / (sum(p) + sum(y) + s)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: float = 1.0,
               eps: float = 1e-6) -> torch.Tensor:
    """Binary focal loss on probabilities (see the module docstring)."""
    return alpha * _focal_terms(prob, target, gamma, eps).mean()


def balanced_focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, eps: float = 1e-6
                        ) -> torch.Tensor:
    """Class-balanced focal loss (Bayes-PFL): the mean of FL over the foreground pixels (target > 0.5)
    plus its mean over the background pixels, each over the whole batch (an empty class adds 0)."""
    terms = _focal_terms(prob, target, gamma, eps)
    fg = (target > 0.5).to(terms.dtype)
    return (terms * fg).sum() / fg.sum().clamp_min(1) + (terms * (1 - fg)).sum() / (1 - fg).sum().clamp_min(1)


def _focal_terms(prob: torch.Tensor, target: torch.Tensor, gamma: float, eps: float) -> torch.Tensor:
    """Element-wise FL(p, y) (module docstring, alpha = 1)."""
    p = prob.clamp(eps, 1 - eps)
    y = target.to(p.dtype)
    return -(y * (1 - p) ** gamma * torch.log(p) + (1 - y) * p ** gamma * torch.log(1 - p))


def focal_loss_with_logits(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0,
                           alpha: float = 1.0) -> torch.Tensor:
    """Focal loss on logits: ``focal_loss(sigmoid(logits), target)`` computed stably."""
    y = target.to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return alpha * (ce * (1 - p_t) ** gamma).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss, per sample over all but the first dimension, then averaged."""
    p = prob.flatten(1)
    y = target.to(p.dtype).flatten(1)
    inter = (p * y).sum(1)
    return (1 - (2 * inter + smooth) / (p.sum(1) + y.sum(1) + smooth)).mean()
