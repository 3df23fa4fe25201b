"""Image metrics and the key encoding: exact agreement with scikit-learn, edge cases, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from fsadlib.metrics import image_metrics, sweep
from fsadlib.metrics.sweep import bits_to_score, score_bits


def sklearn_f1_max(y: np.ndarray, s: np.ndarray) -> float:
    p, r, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        return float(np.nan_to_num(2 * p * r / (p + r)).max())


def test_score_bits_preserve_order_and_invert():
    values = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-42, 1e-30, 0.25, 7.0, np.inf], dtype=np.float32)
    o = score_bits(torch.from_numpy(values)).tolist()
    assert o == sorted(o) and o[3] == o[4]  # -0.0 and +0.0 are one score
    assert len(set(o)) == len(values) - 1
    assert [bits_to_score(v) for v in o] == [float(v) + 0.0 for v in values]


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("levels", [None, 7])
@pytest.mark.parametrize("run", [1 << 22, 16])  # the scores sorted in one run, or in runs of 16
def test_image_metrics_equal_sklearn(monkeypatch, seed, levels, run):
    monkeypatch.setitem(sweep.SORT_RUN, "cpu", run)
    rng = np.random.default_rng(seed)
    y = rng.random(200) < 0.3
    s = (rng.normal(size=200) + y).astype(np.float32)
    if levels:  # heavy ties
        s = np.round(s * levels / 4).astype(np.float32)
    got = image_metrics(s, y)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["f1_max"] == pytest.approx(sklearn_f1_max(y, s), abs=1e-12)
    # the threshold reaches F1-max with "anomalous iff s >= t", and no higher threshold does
    t = got["f1_threshold"]
    pred = s >= t
    assert 2 * (pred & y).sum() / (pred.sum() + y.sum()) == pytest.approx(got["f1_max"], abs=1e-12)
    for higher in np.unique(s[s > t]):
        pred = s >= higher
        assert 2 * (pred & y).sum() / (pred.sum() + y.sum()) < got["f1_max"]


def test_image_metrics_hand_case():
    # scores 4 3 3 2 1, labels 1 1 0 0 1: pairs (pos > neg) = 2 + 1.5 + 0 -> AUROC 3.5/6 (tie = 1/2);
    # thresholds 4: TP1 FP0; 3: TP2 FP1; 2: TP2 FP2; 1: TP3 FP2 -> AP = 1/3 (1 + 2/3 + 3/5)
    got = image_metrics(np.array([4, 3, 3, 2, 1.0]), np.array([1, 1, 0, 0, 1]))
    assert got["auroc"] == pytest.approx(3.5 / 6)
    assert got["ap"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert got["f1_max"] == pytest.approx(3 / 4) and got["f1_threshold"] == 1.0  # F1 = 2*3 / (5 + 3)


def test_strictly_increasing_transform_changes_nothing():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) * 20) / 20  # a coarse grid stays distinct after the transform
    base = image_metrics(s.astype(np.float32), y)
    moved = image_metrics((np.exp(s) * 3 + s ** 3).astype(np.float32), y)
    for key in ("auroc", "ap", "f1_max"):
        assert moved[key] == base[key]


def test_torch_and_numpy_inputs_agree():
    rng = np.random.default_rng(2)
    y = rng.random(50) < 0.5
    s = rng.random(50).astype(np.float32)
    assert image_metrics(torch.from_numpy(s), torch.from_numpy(y).int()) == image_metrics(s, y)


def test_one_class_is_nan_where_undefined():
    normal = image_metrics(np.arange(5.0), np.zeros(5))
    assert all(math.isnan(v) for v in normal.values())
    anomalous = image_metrics(np.arange(5.0), np.ones(5))
    assert math.isnan(anomalous["auroc"]) and anomalous["ap"] == 1.0 and anomalous["f1_max"] == 1.0


def test_infinite_scores_are_ordinary_scores():
    scores = np.array([np.inf, 0.5, 0.1, -np.inf], dtype=np.float32)
    best = image_metrics(scores, np.array([1, 1, 0, 0]))
    assert (best["auroc"], best["ap"], best["f1_max"], best["f1_threshold"]) == (1.0, 1.0, 1.0, 0.5)
    worst = image_metrics(scores, np.array([0, 0, 1, 1]))
    assert worst["auroc"] == 0.0 and worst["ap"] == pytest.approx((1 / 3 + 2 / 4) / 2)  # positives ranked 3rd and 4th


@pytest.mark.parametrize("nan_bits", [0x7FC00000, 0xFFC00000])  # +NaN sorts to the low end, -NaN to the high end
def test_a_nan_of_either_sign_among_finite_scores_is_rejected(nan_bits):
    scores = np.array([0.1, 0.0, 0.5], dtype=np.float32)
    scores[1] = np.array([nan_bits], dtype=np.uint32).view(np.float32)[0]
    with pytest.raises(ValueError, match="NaN"):
        image_metrics(scores, np.array([0, 1, 1]))


@pytest.mark.parametrize("scores, labels, match", [
    (np.array([0.1, np.nan]), np.array([0, 1]), "NaN"),
    (np.array([0.1, 0.2]), np.array([0, 1, 1]), "equal length"),
    (np.array([0.1, 0.2]), np.array([0, 2]), r"labels must be binary \(0/1\), found 2"),
    (np.array([0.1, 0.2, 0.3]), np.array([1, 0, 0.5]), "found 0.5"),
    ([0.1, 0.2], np.array([0, 1]), "scores must be a numpy array"),
])
def test_bad_input_raises(scores, labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        image_metrics(scores, labels)


@pytest.mark.parametrize("nan_bits", [0x7FC00000, 0xFFC00000])
@pytest.mark.parametrize("labels", [[0, 0, 1], [1, 1, 0]])  # the NaN (index 1) among negatives / positives only
def test_a_nan_in_one_class_alone_is_rejected(nan_bits, labels):
    scores = np.array([0.1, 0.0, 0.5], dtype=np.float32)
    scores[1] = np.array([nan_bits], dtype=np.uint32).view(np.float32)[0]
    with pytest.raises(ValueError, match="NaN"):
        image_metrics(scores, np.array(labels))
