"""Exact stratified bootstrap of the image and pixel metrics over test images, all resamples at once.

A resample draws, within each label stratum (normal / anomalous images), as many images as the
stratum holds, with replacement (:func:`resample_counts`); it is a count vector c [N] (c_i = copies
of image i), and pixel metrics resample whole images (all their pixels go together). Every metric
of :mod:`fsadlib.metrics` on the resampled set is exact from per-image counts at the *positive
steps* t_1 > t_2 > ... > t_G (the distinct scores of positives, as in :mod:`fsadlib.metrics.sweep`):

    A_ge[g, i] = # negatives of image i scoring >= t_g          A_gt[g, i] = # scoring > t_g
    T_ge[g, i] = # positives of image i scoring >= t_g
    W_ge[g, i] = sum of 1 / area(region) over those positives   (regions: 8-connected, per image)

For one resample c (a replicated image brings copies of its pixels and of its regions):

    FP_g = A_ge c,   FP_g before the step = A_gt c,   TP_g = T_ge c,   W_g = W_ge c
    P = TP_G,   Nn = (negatives per image) c,   R = (regions per image) c

and the sweep's formulas give AUROC, AP, F1-max and AUPRO (PRO_g = W_g / R, FPR_g = FP_g / Nn,
trapezoid from (0, 0) to (1, 1) cut at ``fpr_limit``). A step that holds no positive of a resample
adds nothing to AUROC or AP and cannot raise F1 or move PRO, so the values equal
:func:`fsadlib.metrics.pixel_metrics` / :func:`~fsadlib.metrics.image_metrics` of the replicated
data exactly (float64 rounding only; tested). All B resamples are four float64 matrix products
C [B, N] x M^T [N, G] (integer counts, exact below 2^53), run on the device the maps are on, in blocks of
at most 2^21 (resample, step) values; AUPRO stops at the first step past ``fpr_limit``.

Cost: a score-bits copy of the maps sorted per image (4 B/pixel, numpy's in-place sort on CPU), then
O(N G B) for the products. G <= 65,536 for float16 maps (the precision ``fsadlib.evaluate`` stores);
float32 maps with many distinct defect scores make G, and the time, proportionally larger.
``benchmarks/bench_bootstrap.py``: 200 x 256^2 maps, B = 1000, about 2 single ``pixel_metrics`` calls
of time and 0.6 GB of peak RSS growth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fsadlib.metrics.inputs import as_tensor, check_binary
from fsadlib.metrics.regions import label_regions
from fsadlib.metrics.sweep import check_fpr_limit, score_bits, trapezoid_to

_BIAS = 1 << 31           # int32 score bits -> non-negative, so (image << 32) | bits sorts by image, then score
_QUERY_BUDGET = 1 << 22   # (image, step) pairs searched at once
_OUTPUT_BUDGET = 1 << 21  # (resample, step) values per product block
_SMALL_WORK = 1 << 24     # below this many pixels x resamples on CPU: one thread (hand-offs cost more than the work)


def resample_counts(labels: Any, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Stratified bootstrap counts [B, N] int64: each row draws, within each label value, as many
    items as it holds, uniformly with replacement (a multinomial per stratum); row sums per stratum
    are fixed, so every resample keeps both classes."""
    y = np.asarray(labels).reshape(-1)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    counts = np.zeros((n_resamples, y.size), dtype=np.int64)
    for value in np.unique(y):
        members = np.flatnonzero(y == value)
        counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1 / members.size),
                                             size=n_resamples)
    return counts


def bootstrap_image_metrics(scores: Any, labels: Any, counts: Any) -> dict[str, np.ndarray]:
    """{"auroc", "ap", "f1_max"} [B] of image scores [N] / labels [N] under each resample
    (``counts`` [B, N]); each equals :func:`fsadlib.metrics.image_metrics` of the replicated images."""
    s = as_tensor(scores, "scores").reshape(-1)
    y = check_binary(as_tensor(labels, "labels").to(s.device).reshape(-1), "labels")
    if s.numel() != y.numel() or s.numel() == 0:
        raise ValueError(f"scores ({s.numel()}) and labels ({y.numel()}) must be non-empty and of equal length")
    result = _resampled(s.view(-1, 1, 1), y.view(-1, 1, 1), counts, None, 1.0)
    return {key: result[key] for key in ("auroc", "ap", "f1_max")}


def bootstrap_pixel_metrics(maps: Any, masks: Any, counts: Any, fpr_limit: float = 0.3) -> dict[str, np.ndarray]:
    """{"auroc", "ap", "f1_max", "aupro"} [B] of maps [N, H, W] / binary masks [N, H, W] under each
    image resample (``counts`` [B, N]); each equals :func:`fsadlib.metrics.pixel_metrics` of the
    replicated images. NaN where the metric is undefined (no negatives, no regions)."""
    fpr_limit = check_fpr_limit(fpr_limit)
    m = as_tensor(maps, "maps")
    g = check_binary(as_tensor(masks, "masks").to(m.device), "masks")
    if m.ndim != 3 or g.shape != m.shape or m.numel() == 0:
        raise ValueError(f"maps {tuple(m.shape)} and masks {tuple(g.shape)} must be equal, non-empty [N, H, W]")
    regions = label_regions(g, g.any(2).cpu().numpy(), g.any(1).cpu().numpy())
    weight = torch.zeros(m.shape, dtype=torch.float64, device=m.device)
    per_image = torch.zeros(m.shape[0], dtype=torch.float64, device=m.device)
    inverse_area = regions.weights(m.device)
    for i, rs, cs, ids in regions.boxes:
        weight[i, rs, cs] = inverse_area[ids.long()]
        per_image[i] = torch.unique(ids[ids > 0]).numel()
    return _resampled(m, g, counts, (weight, per_image), fpr_limit)


def _resampled(maps: torch.Tensor, masks: torch.Tensor, counts: Any,
               regions: tuple[torch.Tensor, torch.Tensor] | None, fpr_limit: float) -> dict[str, np.ndarray]:
    """The module docstring's computation. maps [N, H, W], masks bool [N, H, W], counts [B, N];
    regions: (1 / area per pixel [N, H, W] float64, 0 off defects; regions per image [N]) or None."""
    small = maps.device.type == "cpu" and maps.numel() * len(counts) < _SMALL_WORK
    threads = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        return _resampled_on(maps, masks, counts, regions, fpr_limit)
    finally:
        torch.set_num_threads(threads)


def _resampled_on(maps: torch.Tensor, masks: torch.Tensor, counts: Any,
                  regions: tuple[torch.Tensor, torch.Tensor] | None, fpr_limit: float) -> dict[str, np.ndarray]:
    device = maps.device
    n_img, n_px = maps.shape[0], maps[0].numel()
    c = torch.as_tensor(np.asarray(counts) if not isinstance(counts, torch.Tensor) else counts)
    if c.ndim != 2 or c.shape[1] != n_img:
        raise ValueError(f"counts must be [B, {n_img}] (one column per image), got {tuple(c.shape)}")
    c = c.to(device=device, dtype=torch.float64)
    if torch.isnan(maps).any():
        raise ValueError("maps contain NaN")
    rows = score_bits(maps.reshape(n_img, n_px))                           # int32 [N, HW], a fresh copy
    pos_img, pos_px = masks.reshape(n_img, n_px).nonzero(as_tuple=True)
    pos_bits = rows[pos_img, pos_px]
    pos_keys, order = torch.sort((pos_img << 32) | (pos_bits.to(torch.int64) + _BIAS))
    pos_weight = regions[0].reshape(n_img, n_px)[pos_img, pos_px][order] if regions is not None else None
    rows = _sort_rows_(rows)
    n_pos_img = torch.bincount(pos_img, minlength=n_img).double()
    n_pos, n_neg = c @ n_pos_img, c @ (n_px - n_pos_img)                           # P, Nn: [B]
    steps = torch.unique(pos_bits).flip(0)                                         # t_1 > ... > t_G
    n_res = c.shape[0]
    nan = np.full(n_res, np.nan)
    if steps.numel() == 0:
        return {"auroc": nan, "ap": nan, "f1_max": nan, "aupro": nan}
    cum_weight = torch.cat([pos_weight.new_zeros(1), pos_weight.cumsum(0)]) if pos_weight is not None else None
    auroc_sum = torch.zeros(n_res, dtype=torch.float64, device=device)
    ap_sum, f1, tp_prev = torch.zeros_like(auroc_sum), torch.zeros_like(auroc_sum), torch.zeros_like(auroc_sum)
    x_prev, y_prev, area = torch.zeros_like(auroc_sum), torch.zeros_like(auroc_sum), torch.zeros_like(auroc_sum)
    n_regions = c @ regions[1] if regions is not None else None
    block = max(1, min(_QUERY_BUDGET // n_img, _OUTPUT_BUDGET // n_res))
    for lo in range(0, steps.numel(), block):
        t = steps[lo:lo + block]
        query = t.expand(n_img, -1).contiguous()
        t_ge, t_gt, w_ge = _positive_counts(pos_keys, t, n_img, cum_weight)
        a_ge = n_px - torch.searchsorted(rows, query).double() - t_ge                # negatives >= t_g
        a_gt = n_px - torch.searchsorted(rows, query, right=True).double() - t_gt    # negatives > t_g
        fp, fp_before, tp = c @ a_ge, c @ a_gt, c @ t_ge                            # [B, g]
        d_tp = tp.diff(dim=1, prepend=tp_prev[:, None])
        auroc_sum += (d_tp * (2 * (n_neg[:, None] - fp) + (fp - fp_before))).sum(1)
        above = tp + fp
        ap_sum += torch.where(d_tp > 0, d_tp * tp / above.clamp(min=1), 0.0).sum(1)
        f1 = torch.maximum(f1, (2 * tp / (above + n_pos[:, None])).amax(1))
        tp_prev = tp[:, -1]
        if w_ge is not None and bool((x_prev <= fpr_limit).any()):               # past the limit: no more area
            # FPR grows along the steps: only the steps up to the first beyond the limit add area
            within = int((fp_before / n_neg[:, None] <= fpr_limit).any(0).sum()) + 1
            fp_before, fp = fp_before[:, :within], fp[:, :within]
            pro = (c @ w_ge[:, :within]) / n_regions[:, None]
            x = torch.stack([fp_before, fp], 2).reshape(n_res, -1) / n_neg[:, None]
            y = torch.stack([torch.cat([y_prev[:, None], pro[:, :-1]], 1), pro], 2).reshape(n_res, -1)
            area += trapezoid_to(torch.cat([x_prev[:, None], x], 1), torch.cat([y_prev[:, None], y], 1), fpr_limit)
            x_prev, y_prev = x[:, -1], y[:, -1]
    result = {"auroc": (auroc_sum / (2 * n_pos * n_neg)).cpu().numpy(), "ap": (ap_sum / n_pos).cpu().numpy(),
              "f1_max": f1.cpu().numpy(), "aupro": nan}
    result["auroc"][(n_neg == 0).cpu().numpy()] = np.nan
    if regions is not None:
        one = x_prev.new_ones(n_res, 1)
        area += trapezoid_to(torch.cat([x_prev[:, None], one], 1), torch.cat([y_prev[:, None], one], 1), fpr_limit)
        aupro = (area / fpr_limit).cpu().numpy()
        aupro[((n_neg == 0) | (n_regions == 0)).cpu().numpy()] = np.nan
        result["aupro"] = aupro
    return result


def _sort_rows_(rows: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending: in place with numpy on CPU (SIMD sort), ``torch.sort`` elsewhere."""
    if rows.device.type == "cpu":
        rows.numpy().sort(axis=1)
        return rows
    return torch.sort(rows, dim=1).values


def _positive_counts(keys: torch.Tensor, steps: torch.Tensor, n_img: int, cum_weight: torch.Tensor | None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-image counts [N, g] float64 of positives scoring >= / > each step (int32 bits [g]), and with
    ``cum_weight`` [P + 1] (running sum of the positives' 1 / area in key order) their weight sums.
    keys: [P] sorted ``image << 32 | (bits + 2^31)``."""
    image = torch.arange(n_img, device=keys.device, dtype=torch.int64)[:, None]
    end = torch.searchsorted(keys, (image + 1) << 32)                                      # [N, 1]
    query = (image << 32) | (steps.to(torch.int64) + _BIAS)[None, :]
    ge = torch.searchsorted(keys, query)
    gt = torch.searchsorted(keys, query, right=True)
    weight = (cum_weight[end] - cum_weight[ge]) if cum_weight is not None else None
    return (end - ge).double(), (end - gt).double(), weight
