"""Percentile intervals, seed means, paired p-values and Holm on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from fsadlib.stats import (
    bootstrap_p_value,
    holm,
    image_resamples,
    percentile_interval,
    seed_draws,
    seed_mean_replicates,
)


def test_percentile_interval_hand_values():
    assert percentile_interval(np.arange(101), 0.9) == pytest.approx((5.0, 95.0), abs=1e-12)
    assert np.isnan(percentile_interval([0.1, np.nan], 0.9)).all()
    with pytest.raises(ValueError, match="confidence"):
        percentile_interval([1.0], 1.0)


def test_seed_mean_replicates_follow_the_draws():
    replicates = np.array([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]])        # [S=3, B=2]
    draws = np.array([[0, 0, 2], [1, 2, 2]])                               # [B, S]
    np.testing.assert_allclose(seed_mean_replicates(replicates, draws), [102 / 3, 420 / 3])
    d = seed_draws(3, 1000, seed=0)
    assert d.shape == (1000, 3) and set(np.unique(d)) == {0, 1, 2}
    np.testing.assert_array_equal(d, seed_draws(3, 1000, seed=0))
    np.testing.assert_array_equal(seed_mean_replicates(replicates[:1]), replicates[0])   # one seed: itself


def test_bootstrap_p_value_hand_cases():
    assert bootstrap_p_value(np.zeros(99)) == 1.0                          # identical methods
    assert bootstrap_p_value(np.ones(99)) == pytest.approx(2 / 100)        # every resample favours A
    assert bootstrap_p_value(np.r_[-np.ones(9), np.ones(90)]) == pytest.approx(2 * 10 / 100)


def test_holm_hand_case():
    """p = (0.01, 0.04, 0.03): sorted 0.01 x 3, 0.03 x 2, 0.04 x 1 -> 0.03, 0.06, 0.06 (monotone)."""
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.001, 0.6, 0.002]), [1.0, 0.004, 1.0, 0.006])
    assert np.isnan(holm([np.nan, 0.2])[0]) and holm([np.nan, 0.2])[1] == pytest.approx(0.2)


def test_resamples_are_keyed_by_the_image_list():
    paths, labels = [f"img{i}.png" for i in range(6)], [0, 0, 0, 1, 1, 1]
    a = image_resamples(paths, labels, 50)
    np.testing.assert_array_equal(a, image_resamples(list(paths), labels, 50))
    assert not np.array_equal(a, image_resamples(paths[::-1], labels, 50))
