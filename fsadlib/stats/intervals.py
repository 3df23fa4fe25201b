"""Percentile intervals, the support-seed combination, bootstrap p-values and Holm's correction.

Replicates are metric values under the B image resamples of :mod:`fsadlib.stats.bootstrap`. Every
method, seed and category of one test set uses the same resamples (:func:`image_resamples` is keyed by
the image list), so replicates of two methods are paired by their index b.

Seed mean. The reported number is the mean over the S support seeds of a (method, k); its resample b
is the mean of S replicates at index b from seeds drawn with replacement (``seed_draws`` [B, S],
shared by every method), so the interval holds both the test-image and the support-draw spread:

    m*_b = (1 / S) sum_{k=1..S} r[d_bk, b],      d_bk ~ uniform{1..S}

(a two-stage bootstrap; with S = 3 the seed stage can only take 10 distinct multisets, so intervals
of a 3-seed mean are rough). The category mean of a run averages the category replicates at equal b.

Interval: the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of the B replicates (linear
interpolation, numpy's default); NaN when a replicate is NaN (the metric is undefined).
Holm's step-down correction across categories (:func:`holm`).
Paired p-value of a difference D (replicates D*_b): 2 min((1 + #{D* <= 0}) / (B + 1), (1 + #{D* >= 0}) /
(B + 1)), capped at 1: below alpha exactly when 0 lies outside the (1 - alpha) percentile interval
(up to the +1 terms).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from fsadlib.stats.bootstrap import resample_counts

INTERVAL_METHOD = ("percentile bootstrap over test images (stratified by label; pixel metrics resample whole "
                   "images), same resamples for every method and seed; seed means: support seeds drawn with "
                   "replacement per resample (two-stage)")


def image_resamples(image_paths: list[str], labels: Any, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Stratified resample counts [B, N] for a test set, keyed by ``seed`` and the ordered image list,
    so every method and support seed evaluated on the same images gets the same resamples."""
    key = hashlib.sha1("\n".join(map(str, image_paths)).encode()).digest()
    rng = np.random.default_rng([seed, int.from_bytes(key[:8], "little")])
    return resample_counts(labels, n_resamples, rng)


def image_list_hash(image_paths: list[str]) -> str:
    """sha1 of the ordered image list (replicates pair only on the same list)."""
    return hashlib.sha1("\n".join(map(str, image_paths)).encode()).hexdigest()


def seed_draws(n_seeds: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """Seed indices [B, S] drawn uniformly with replacement (the same for every method)."""
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    return np.random.default_rng([seed, n_seeds]).integers(0, n_seeds, size=(n_resamples, n_seeds))


def seed_mean_replicates(replicates: np.ndarray, draws: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Replicates [B] of the seed mean from per-seed replicates [S, B] (module docstring)."""
    r = np.asarray(replicates, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError(f"replicates must be [S, B], got shape {r.shape}")
    d = seed_draws(r.shape[0], r.shape[1], seed) if draws is None else draws
    return r[d, np.arange(r.shape[1])[:, None]].mean(axis=1)


def percentile_interval(replicates: Any, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high) percentile interval of replicates [B]; NaN if any replicate is NaN."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    r = np.asarray(replicates, dtype=np.float64).reshape(-1)
    if r.size == 0 or np.isnan(r).any():
        return float("nan"), float("nan")
    low, high = np.quantile(r, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def bootstrap_p_value(differences: Any) -> float:
    """Two-sided paired bootstrap p-value of replicates [B] of a difference (module docstring)."""
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    if d.size == 0 or np.isnan(d).any():
        return float("nan")
    below, above = (d <= 0).sum(), (d >= 0).sum()
    return float(min(1.0, 2 * (1 + min(below, above)) / (d.size + 1)))


def holm(p_values: Any) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values over the m non-NaN ones (NaN stays NaN): with p_(1) <= ... <=
    p_(m) sorted, adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)); reject at alpha iff adjusted < alpha."""
    p = np.asarray(p_values, dtype=np.float64).reshape(-1)
    adjusted = np.full(p.shape, np.nan)
    index = np.flatnonzero(~np.isnan(p))
    order = index[np.argsort(p[index], kind="stable")]
    m = order.size
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return adjusted
