"""Image-level AUROC, AP and F1-max (with its threshold), exact, from one sort of the scores
(and one of the anomalous images' scores)."""

from __future__ import annotations

from typing import Any

import torch

from fsadlib.metrics.inputs import as_tensor, check_binary
from fsadlib.metrics.sweep import descending_bits, positive_keys, sort_bits_, sweep


def image_metrics(scores: Any, labels: Any) -> dict[str, float]:
    """{"auroc", "ap", "f1_max", "f1_threshold"} of image scores [N] against labels [N] (1 = anomalous).

    Equal to scikit-learn's ``roc_auc_score``, ``average_precision_score`` and the maximum F1 over
    ``precision_recall_curve`` for float32 scores (float64 scores are compared as float32, the
    precision every method outputs). ``f1_threshold`` is the highest threshold t reaching F1-max,
    for the rule "anomalous iff score >= t". NaN where undefined (see :mod:`fsadlib.metrics.sweep`).
    """
    s = as_tensor(scores, "scores").reshape(-1)
    y = check_binary(as_tensor(labels, "labels").to(s.device).reshape(-1), "labels")
    if s.numel() != y.numel() or s.numel() == 0:
        raise ValueError(f"scores ({s.numel()}) and labels ({y.numel()}) must be non-empty and of "
                         "equal length")
    bits = descending_bits(s)
    positive = bits[y]
    r = sweep(sort_bits_(bits), positive_keys(positive, torch.ones_like(positive)))
    return {"auroc": r.auroc, "ap": r.ap, "f1_max": r.f1_max, "f1_threshold": r.f1_threshold}
