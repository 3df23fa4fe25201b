"""DeLong's test for correlated AUROCs (DeLong, DeLong & Clarke-Pearson 1988), fast O(n log n) form
(Sun & Xu 2014).

For K score vectors on the same m positives X and n negatives Y, with psi(x, y) = 1 if x > y,
1/2 if x = y, 0 otherwise, the structural components of classifier k are

    V10_k(i) = (1/n) sum_j psi(X_ki, Y_kj)     (per positive)     V01_k(j) = (1/m) sum_i psi(X_ki, Y_kj)

AUC_k = mean_i V10_k(i), and the covariance of the AUCs is S = S10 / m + S01 / n with S10, S01 the
sample covariance matrices (ddof = 1) of the components over positives / negatives. Midranks make
it O(n log n): with T_z the midranks of all m + n scores, T_x / T_y those within X / Y,

    V10(i) = (T_z(X_i) - T_x(X_i)) / n,   V01(j) = 1 - (T_z(Y_j) - T_y(Y_j)) / m.

Two methods A, B: z = (AUC_A - AUC_B) / sqrt(S_AA + S_BB - 2 S_AB), two-sided p = 2 Phi(-|z|).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr
from scipy.stats import rankdata


@dataclass(frozen=True)
class DeLongResult:
    """auc: [K]; covariance: [K, K] of the AUC estimates."""

    auc: np.ndarray
    covariance: np.ndarray


def delong(scores: Any, labels: Any) -> DeLongResult:
    """AUCs and their DeLong covariance for ``scores`` [K, N] (or [N]) against binary ``labels`` [N]."""
    s = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    y = np.asarray(labels).reshape(-1)
    if s.shape[1] != y.size:
        raise ValueError(f"scores {s.shape} and labels ({y.size}) disagree in length")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0/1)")
    pos, neg = s[:, y == 1], s[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"DeLong needs at least 2 positives and 2 negatives, got {m} and {n}")
    t_z = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (t_z[:, :m] - rankdata(pos, axis=1)) / n
    v01 = 1.0 - (t_z[:, m:] - rankdata(neg, axis=1)) / m
    covariance = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return DeLongResult(auc=v10.mean(axis=1), covariance=covariance)


@dataclass(frozen=True)
class PairedTest:
    """difference = metric(A) - metric(B); ``std_error`` of the difference; two-sided ``p``."""

    difference: float
    std_error: float
    z: float
    p: float


def delong_test(scores_a: Any, scores_b: Any, labels: Any) -> PairedTest:
    """DeLong's two-sided test of AUC(A) = AUC(B) on the same images (see the module docstring).
    Equal score vectors (zero variance of the difference) give z = 0, p = 1."""
    result = delong(np.stack([np.asarray(scores_a, np.float64).reshape(-1),
                              np.asarray(scores_b, np.float64).reshape(-1)]), labels)
    return z_test(float(result.auc[0] - result.auc[1]), float(result.covariance[0, 0] + result.covariance[1, 1]
                                                              - 2 * result.covariance[0, 1]))


def z_test(difference: float, variance: float) -> PairedTest:
    """Normal test of a difference with the given variance; zero variance and difference: p = 1."""
    se = float(np.sqrt(max(variance, 0.0)))
    if se == 0.0:
        z = 0.0 if difference == 0 else float(np.copysign(np.inf, difference))
    else:
        z = difference / se
    return PairedTest(difference=difference, std_error=se, z=z, p=float(2 * ndtr(-abs(z))))
