"""Bootstrap replicates equal the exact metrics of the replicated data; stratification; coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from metrics_reference import mvtec_like
from scipy.special import ndtr

from fsadlib.metrics import image_metrics, pixel_metrics
from fsadlib.stats import (
    bootstrap_image_metrics,
    bootstrap_pixel_metrics,
    percentile_interval,
    resample_counts,
)


@pytest.mark.parametrize("seed, levels", [(0, None), (1, 6), (2, 40)])
def test_pixel_replicates_equal_pixel_metrics_of_the_replicated_images(seed, levels):
    maps, masks = mvtec_like(10, 20, seed, levels)
    counts = resample_counts(masks.any((1, 2)), 6, np.random.default_rng(seed))
    counts[0] = 1                                                      # the original set is one "resample"
    got = bootstrap_pixel_metrics(torch.from_numpy(maps), masks, counts)
    for b in range(len(counts)):
        index = np.repeat(np.arange(len(maps)), counts[b])
        want = pixel_metrics(maps[index], masks[index])
        for key, value in want.items():
            assert got[key][b] == pytest.approx(value, abs=1e-12), (key, b)


@pytest.mark.parametrize("levels", [None, 5])
def test_image_replicates_equal_image_metrics_of_the_replicated_images(levels):
    rng = np.random.default_rng(3)
    labels = np.r_[np.zeros(15), np.ones(9)].astype(int)
    scores = rng.normal(size=24) + labels
    if levels:
        scores = np.round(scores * levels / 4)
    counts = resample_counts(labels, 20, rng)
    got = bootstrap_image_metrics(scores.astype(np.float32), labels, counts)
    for b in range(len(counts)):
        index = np.repeat(np.arange(24), counts[b])
        want = image_metrics(scores[index], labels[index])
        for key in ("auroc", "ap", "f1_max"):
            assert got[key][b] == pytest.approx(want[key], abs=1e-12), (key, b)


def test_a_block_boundary_inside_the_steps_changes_nothing(monkeypatch):
    from fsadlib.stats import bootstrap
    maps, masks = mvtec_like(8, 24, 5)
    counts = resample_counts(masks.any((1, 2)), 4, np.random.default_rng(0))
    whole = bootstrap_pixel_metrics(maps, masks, counts)
    monkeypatch.setattr(bootstrap, "_OUTPUT_BUDGET", 4 * 7)              # 7 steps per block
    blocked = bootstrap_pixel_metrics(maps, masks, counts)
    for key in whole:
        np.testing.assert_allclose(blocked[key], whole[key], rtol=0, atol=1e-12)


def test_resample_counts_are_stratified_and_seeded():
    labels = np.array([0, 0, 0, 1, 1, 0, 1])
    counts = resample_counts(labels, 500, np.random.default_rng(7))
    assert counts.shape == (500, 7) and (counts >= 0).all()
    assert (counts[:, labels == 0].sum(1) == 4).all() and (counts[:, labels == 1].sum(1) == 3).all()
    assert counts[:, labels == 1].mean(0) == pytest.approx([1, 1, 1], abs=0.15)   # uniform within the stratum
    np.testing.assert_array_equal(counts, resample_counts(labels, 500, np.random.default_rng(7)))


def test_errors_name_the_input():
    maps, masks = mvtec_like(4, 8, 0)
    with pytest.raises(ValueError, match="counts must be"):
        bootstrap_pixel_metrics(maps, masks, np.ones((3, 5)))
    with pytest.raises(ValueError, match="masks must be binary"):
        bootstrap_pixel_metrics(maps, masks * 2.0, np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_pixel_metrics(np.full_like(maps, np.nan), masks, np.ones((3, 4)))
    with pytest.raises(ValueError, match="n_resamples"):
        resample_counts([0, 1], 0, np.random.default_rng(0))


def test_no_normal_pixel_gives_nan_auroc_and_aupro():
    maps = np.random.default_rng(0).random((2, 3, 3)).astype(np.float32)
    got = bootstrap_pixel_metrics(maps, np.ones((2, 3, 3), bool), np.ones((2, 2)))
    assert np.isnan(got["auroc"]).all() and np.isnan(got["aupro"]).all() and (got["ap"] == 1).all()


def test_interval_covers_the_true_auroc_at_about_the_nominal_rate():
    """Binormal scores, positives N(1, 1) vs negatives N(0, 1): true AUROC = Phi(1 / sqrt 2) = 0.760.
    200 data sets of 40 + 40 images, 400 resamples each, 95 % percentile intervals. The binomial
    standard error of the coverage is 0.015; percentile intervals of an AUROC at this size run a
    little short, so the tolerance is [0.90, 0.99] (fixed seed: the test is deterministic)."""
    rng = np.random.default_rng(2026)
    truth = float(ndtr(1 / math.sqrt(2)))
    labels = np.r_[np.zeros(40), np.ones(40)].astype(int)
    covered = 0
    for _ in range(200):
        scores = (rng.normal(size=80) + labels).astype(np.float32)
        replicates = bootstrap_image_metrics(scores, labels, resample_counts(labels, 400, rng))["auroc"]
        low, high = percentile_interval(replicates, 0.95)
        covered += low <= truth <= high
    assert 0.90 <= covered / 200 <= 0.99, covered / 200
