"""Shared map pieces and losses against slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from fsadlib.losses import dice_loss, focal_loss, focal_loss_with_logits
from fsadlib.maps import (
    fused_image_score,
    gaussian_blur,
    grid_side,
    harmonic_mean,
    nearest_distance,
    patch_text_probs,
    to_map,
    topk_mean,
)


def test_nearest_distance_against_loops_and_zero_for_identical_patch():
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(2, 5, 8, generator=g), torch.randn(7, 8, generator=g)
    bank[3] = q[1, 2] * 3.0  # same direction -> distance 0
    got = nearest_distance(q, bank, chunk=3)
    for b in range(2):
        for i in range(5):
            want = min((1 - F.cosine_similarity(q[b, i], bank[j], dim=0)) / 2 for j in range(7))
            assert abs(float(got[b, i]) - float(want)) < 1e-6
    assert float(got[1, 2]) == pytest.approx(0.0, abs=1e-6)


def test_nearest_distance_per_image_bank_equals_shared_bank_per_image():
    g = torch.Generator().manual_seed(1)
    q, banks = torch.randn(3, 4, 6, generator=g), torch.randn(3, 5, 6, generator=g)
    got = nearest_distance(q, banks, chunk=4)  # chunk of one image at a time
    want = torch.stack([nearest_distance(q[i:i + 1], banks[i])[0] for i in range(3)])
    assert torch.allclose(got, want, atol=1e-6) and got.shape == (3, 4)


def test_patch_text_probs_and_map():
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = patch_text_probs(tokens, text, scale=1.0)
    want = torch.softmax(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7071068, 0.7071068], [-1.0, 0.0]]), -1)[:, 1]
    assert torch.allclose(p[0], want, atol=1e-6)
    m = to_map(p, (2, 2), 4)
    assert m.shape == (1, 4, 4) and torch.isclose(m[0, 0, 0], p[0, 0])
    # each text embedding is normalised on its own: (3, 4) -> (0.6, 0.8); cos with (1, 0): 0.6, with (0, 1): 0.8
    p = patch_text_probs(tokens[:, :2], torch.tensor([[3.0, 4.0], [0.0, 1.0]]), scale=1.0)
    assert torch.allclose(p[0], torch.tensor([1 / (1 + np.exp(0.6)), 1 / (1 + np.exp(-0.2))]).float(), atol=1e-6)


def test_grid_side_of_square_token_counts_only():
    assert (grid_side(1), grid_side(49), grid_side(576)) == (1, 7, 24)
    with pytest.raises(ValueError, match="50 tokens do not form a square grid"):
        grid_side(50)


@pytest.mark.parametrize("mode, sigma", [("mirror", 2.0), ("reflect", 2.0), ("mirror", 0.75)])  # radius 8; 3 (odd)
def test_gaussian_blur_matches_scipy_borders_included(mode, sigma):
    x = np.random.default_rng(0).random((2, 32, 20)).astype(np.float32)
    got = gaussian_blur(torch.from_numpy(x), sigma, mode).numpy()
    want = np.stack([gaussian_filter(m, sigma, mode=mode, truncate=4.0) for m in x])
    assert np.abs(got - want).max() < 1e-5
    other = np.stack([gaussian_filter(m, sigma, mode={"mirror": "reflect", "reflect": "mirror"}[mode]) for m in x])
    assert np.abs(got - other)[:, 0].max() > 1e-3          # the two border rules differ at the edges
    t = torch.from_numpy(x)
    assert gaussian_blur(t, 0) is t
    with pytest.raises(ValueError, match="mode"):
        gaussian_blur(t, 1.0, "nearest")


def test_harmonic_and_topk():
    assert torch.isclose(harmonic_mean(torch.tensor(1.0), torch.tensor(3.0)), torch.tensor(1.5), atol=1e-6)
    assert torch.equal(topk_mean(torch.tensor([[[1.0, 5.0], [3.0, 2.0]]]), 2), torch.tensor([4.0]))


def test_losses_by_hand():
    p, y = torch.tensor([0.8, 0.3]), torch.tensor([1.0, 0.0])
    want = -((0.2 ** 2) * np.log(0.8) + (0.3 ** 2) * np.log(0.7)) / 2
    assert float(focal_loss(p, y)) == pytest.approx(want, rel=1e-5)
    assert float(focal_loss(p, y, gamma=0)) == pytest.approx(float(F.binary_cross_entropy(p, y)), rel=1e-5)
    logits = torch.logit(p)
    assert float(focal_loss_with_logits(logits, y)) == pytest.approx(want, rel=1e-4)
    assert float(dice_loss(torch.ones(1, 4), torch.tensor([[1.0, 1.0, 0.0, 0.0]]), smooth=0)) == pytest.approx(1 / 3)


def test_fused_image_score_by_hand():
    maps = torch.tensor([[[1.0, 4.0], [3.0, 2.0]], [[0.0, 0.0], [0.0, 8.0]]])
    got = fused_image_score(torch.tensor([0.5, 1.0]), maps, k=2, text_weight=0.25)
    assert torch.allclose(got, torch.tensor([0.25 * 0.5 + 0.75 * 3.5, 0.25 * 1.0 + 0.75 * 4.0]))
