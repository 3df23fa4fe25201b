"""fsadlib.losses pinned by hand-computed values: every parameter (gamma, alpha, eps, smooth), the
class split of the balanced focal loss and the per-sample Dice average."""

from __future__ import annotations

import math

import pytest
import torch

from fsadlib.losses import balanced_focal_loss, dice_loss, focal_loss, focal_loss_with_logits


def fl(p: float, y: float, gamma: float) -> float:
    """FL(p, y) of one element, written out."""
    return -(y * (1 - p) ** gamma * math.log(p) + (1 - y) * p ** gamma * math.log(1 - p))


def test_focal_loss_gamma_and_alpha():
    p, y = torch.tensor([0.8, 0.3], dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    want = 0.5 * (-0.2 * math.log(0.8) - 0.3 * math.log(0.7)) / 2  # gamma 1, alpha 0.5
    assert float(focal_loss(p, y, gamma=1.0, alpha=0.5)) == pytest.approx(want, rel=1e-12)
    logits = torch.log(p / (1 - p))
    assert float(focal_loss_with_logits(logits, y, gamma=1.0, alpha=0.5)) == pytest.approx(want, rel=1e-9)
    assert float(focal_loss_with_logits(logits, y)) == pytest.approx((fl(0.8, 1, 2) + fl(0.3, 0, 2)) / 2, rel=1e-9)


def test_focal_loss_clamps_at_eps():
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    assert float(focal_loss(one, zero, gamma=0)) == pytest.approx(-math.log(1e-6), rel=1e-6)
    assert float(focal_loss(zero, one, gamma=0)) == pytest.approx(-math.log(1e-6), rel=1e-6)
    assert float(focal_loss(zero, one, gamma=0, eps=1e-3)) == pytest.approx(-math.log(1e-3), rel=1e-6)
    assert float(balanced_focal_loss(zero, one, gamma=0)) == pytest.approx(-math.log(1e-6), rel=1e-6)


def test_balanced_focal_loss_means_per_class():
    prob = torch.tensor([[0.9, 0.2], [0.6, 0.1]], dtype=torch.float64)
    target = torch.tensor([[1.0, 0.0], [1.0, 0.5]], dtype=torch.float64)  # 0.5 is background (> 0.5 is fg)
    fg = (fl(0.9, 1, 2) + fl(0.6, 1, 2)) / 2
    bg = (fl(0.2, 0, 2) + fl(0.1, 0.5, 2)) / 2
    assert float(balanced_focal_loss(prob, target)) == pytest.approx(fg + bg, rel=1e-12)
    assert float(balanced_focal_loss(prob, target, gamma=1.0)) == pytest.approx(
        (fl(0.9, 1, 1) + fl(0.6, 1, 1)) / 2 + (fl(0.2, 0, 1) + fl(0.1, 0.5, 1)) / 2, rel=1e-12)
    background_only = torch.zeros_like(prob)                                # an empty class adds 0
    assert float(balanced_focal_loss(prob, background_only)) == pytest.approx(
        sum(fl(p, 0, 2) for p in (0.9, 0.2, 0.6, 0.1)) / 4, rel=1e-12)
    assert float(balanced_focal_loss(prob, torch.ones_like(prob))) == pytest.approx(
        sum(fl(p, 1, 2) for p in (0.9, 0.2, 0.6, 0.1)) / 4, rel=1e-12)
    one_of_each = torch.tensor([[1.0, 0.0]], dtype=torch.float64)          # a class of one pixel: its FL as is
    assert float(balanced_focal_loss(prob[:1], one_of_each)) == pytest.approx(fl(0.9, 1, 2) + fl(0.2, 0, 2), rel=1e-12)


def test_dice_loss_default_smooth_per_sample_mean():
    prob = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    # sample 1: 1 - (2 * 0.5 + 1) / (1 + 1 + 1) = 1/3; sample 2: 1 - (0 + 1) / (4 + 0 + 1) = 4/5
    assert float(dice_loss(prob, target)) == pytest.approx((1 / 3 + 4 / 5) / 2, rel=1e-6)
    assert float(dice_loss(prob, target, smooth=0.5)) == pytest.approx((1 - 1.5 / 2.5 + 1 - 0.5 / 4.5) / 2, rel=1e-6)
    masks = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])                        # [B, H, W]: flattened per sample
    assert float(dice_loss(masks, masks, smooth=0)) == pytest.approx(0.0, abs=1e-7)
