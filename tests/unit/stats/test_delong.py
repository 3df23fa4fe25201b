"""DeLong: slow O(mn) reference, a hand-computed case, a published example, null and planted cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fsadlib.stats import delong, delong_test, z_test


def slow_delong(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and covariance by the definition: psi over every (positive, negative) pair."""
    pos, neg = scores[:, labels == 1], scores[:, labels == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(2), psi.mean(1)
    m, n = pos.shape[1], neg.shape[1]
    k = len(scores)
    s10 = np.array([[np.sum((v10[a] - v10[a].mean()) * (v10[b] - v10[b].mean())) / (m - 1) for b in range(k)]
                    for a in range(k)])
    s01 = np.array([[np.sum((v01[a] - v01[a].mean()) * (v01[b] - v01[b].mean())) / (n - 1) for b in range(k)]
                    for a in range(k)])
    return v10.mean(1), s10 / m + s01 / n


@pytest.mark.parametrize("seed, ties", [(0, False), (1, True), (2, True)])
def test_fast_equals_slow_reference(seed, ties):
    rng = np.random.default_rng(seed)
    labels = (rng.random(70) < 0.4).astype(int)
    scores = rng.normal(size=(3, 70)) + labels * np.array([[0.5], [1.0], [0.2]])
    if ties:
        scores = np.round(scores * 2)
    auc, cov = slow_delong(scores, labels)
    got = delong(scores, labels)
    np.testing.assert_allclose(got.auc, auc, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.covariance, cov, rtol=0, atol=1e-12)
    assert got.auc[0] == pytest.approx(roc_auc_score(labels, scores[0]), abs=1e-12)
    test = delong_test(scores[0], scores[1], labels)
    assert test.std_error ** 2 == pytest.approx(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], abs=1e-12)


def test_hand_computed_case():
    """X = (0.9, 0.4) positives, Y = (0.5, 0.1) negatives: V10 = (1, 1/2), V01 = (1/2, 1), AUC 3/4,
    S10 = S01 = 1/8, variance = 1/8 / 2 + 1/8 / 2 = 1/8."""
    got = delong([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0])
    assert got.auc[0] == pytest.approx(0.75, abs=1e-15)
    assert got.covariance[0, 0] == pytest.approx(0.125, abs=1e-15)


def test_published_example_hanley_mcneil_1982():
    """Hanley & McNeil (Radiology 1982), 109 CT images rated 1-5: 58 normal (33, 6, 6, 11, 2) and
    51 abnormal (3, 2, 2, 11, 33); the published area (Wilcoxon, ties half) is 0.893."""
    ratings = np.arange(1, 6)
    normal, abnormal = np.repeat(ratings, [33, 6, 6, 11, 2]), np.repeat(ratings, [3, 2, 2, 11, 33])
    scores = np.r_[normal, abnormal].astype(float)
    labels = np.r_[np.zeros(58), np.ones(51)].astype(int)
    got = delong(scores, labels)
    assert round(float(got.auc[0]), 3) == 0.893
    _, cov = slow_delong(scores[None], labels)
    assert got.covariance[0, 0] == pytest.approx(cov[0, 0], abs=1e-12)


def test_identical_methods_are_not_different_and_a_planted_advantage_is_found():
    rng = np.random.default_rng(4)
    labels = np.r_[np.zeros(60), np.ones(40)].astype(int)
    weak = rng.normal(size=100) + 0.3 * labels
    same = delong_test(weak, weak, labels)
    assert (same.difference, same.z, same.p) == (0.0, 0.0, 1.0)
    strong = weak + 1.5 * labels + 0.3 * rng.normal(size=100)
    planted = delong_test(strong, weak, labels)
    assert planted.difference > 0 and planted.p < 1e-4


def test_false_positive_rate_of_exchangeable_methods_is_near_alpha():
    """Two methods with the same score distribution: 300 data sets, rejections at 0.05 within
    [0.01, 0.10] (binomial standard error 0.013; fixed seed)."""
    rng = np.random.default_rng(11)
    labels = np.r_[np.zeros(50), np.ones(50)].astype(int)
    rejected = 0
    for _ in range(300):
        shared = rng.normal(size=100)
        a, b = shared + rng.normal(size=100) + labels, shared + rng.normal(size=100) + labels
        rejected += delong_test(a, b, labels).p < 0.05
    assert 0.01 <= rejected / 300 <= 0.10


def test_z_test_and_errors():
    assert z_test(0.1, 0.0).p == 0.0 and z_test(0.0, 0.0).p == 1.0
    assert z_test(1.959963984540054, 1.0).p == pytest.approx(0.05, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong([0.1, 0.2, 0.3], [1, 0, 0])
    with pytest.raises(ValueError, match="binary"):
        delong([0.1, 0.2, 0.3, 0.4], [1, 0, 2, 0])
