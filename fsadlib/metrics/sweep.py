"""The one-sort core: the samples' scores as int32, one sort, the positives as (score, group) keys,
a sweep over the positive steps -> AUROC, AP, F1-max, AUPRO.

Encoding. A float32 score s with bit pattern b (read as int32) maps to o(s) = b for s >= 0 and
b ^ 0x7fffffff for s < 0, an int32 whose signed order is the order of s (-0.0 is folded into +0.0,
NaN is rejected, +-inf are ordinary). Two arrays are sorted ascending, so that scores come in
descending order with equal scores adjacent:

- every sample (pixel or image): ``~o(s)``, one int32 ([n], 4 B per sample), sorted in place (numpy
  on CPU; on CUDA in runs of 2^26 samples by ``torch.sort``, its copy written back: S runs). It
  only counts: the samples scoring > t / >= t are the sums over the runs of ``searchsorted`` left /
  right of ``~o(t)``. NaN scores sort beyond +-inf, to the ends of their run, so one look at both
  ends of each run rejects them (positives included: they are samples too);
- the positives only, gathered by the caller without a pass over all samples (the labelled region
  boxes of :mod:`fsadlib.metrics.regions`): one int64 key ``(~o(s)) << 32 | g`` each ([P]), g = r >= 1
  the region of the positive (1 when there are no regions), sorted in O(P log P).

Sweep. P / Nn are the numbers of positives / negatives, R the number of regions. A *positive step*
is a distinct score t_j holding at least one positive (t_1 > t_2 > ... > t_G). At step j: N_j samples
score >= t_j, TP_j of them positive, FP_j = N_j - TP_j; dTP_j / dFP_j positives / negatives score
exactly t_j; W_j is the sum of 1 / area(region) over positives scoring >= t_j. TP_j, W_j and the steps
come from the sorted positive keys, N_j and the samples scoring > t_j from the sorted int32 runs.
Then, exactly:

    AUROC = sum_j dTP_j (Nn - FP_j + dFP_j / 2) / (P Nn)    each positive beats the negatives below it,
                                                            ties count half (= scikit-learn's trapezoid)
    AP    = sum_j dTP_j / P * TP_j / N_j                    step-wise (= scikit-learn); steps without
                                                            positives add no recall
    F1max = max_j 2 TP_j / (N_j + P)                        F1 only grows at a positive step;
                                                            threshold t_j of the first maximum (s >= t)
    AUPRO = (1 / L) int_0^L PRO dFPR                        PRO_j = W_j / R, FPR_j = FP_j / Nn

PRO is constant between positive steps, so the MVTec AD polyline through every distinct score, from
(0, 0) to (1, 1), is the polyline (0, 0), (FPR before step j, PRO_{j-1}), (FPR_j, PRO_j) ... (1, 1);
its trapezoid area up to FPR = L, the crossing segment linearly interpolated (MVTec
``trapezoid(x_max=L)``), divided by L, is the AUPRO. All work after the two sorts is O(P + G S log n).
Undefined values are NaN: AUROC without both classes, AP / F1-max without positives, AUPRO without
regions or without negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

_LOW31 = 0x7FFFFFFF
_LOW32 = 0xFFFFFFFF
_POS_INF_BITS, _NEG_INF_BITS = ~0x7F800000, 0x7F800000  # ~o(+inf), ~o(-inf): the ends of non-NaN scores
_CUDA_RUN = 1 << 26
#: samples per sorted run of :func:`sort_bits_` (None: all in one), and the bytes of the sort's temporaries
SORT_RUN: dict[str, int | None] = {"cpu": None, "cuda": _CUDA_RUN}
SORT_TEMP_BYTES = {"cpu": 0, "cuda": 32 * _CUDA_RUN}


def score_bits(scores: torch.Tensor) -> torch.Tensor:
    """Order-preserving int32 image o(s) of scores (compared as float32): s < s' <=> o(s) < o(s').
    A fresh tensor; temporaries: 4 B per score besides it."""
    b = (scores.to(torch.float32) + 0.0).view(torch.int32)  # a fresh copy; folds -0.0 into +0.0
    flip = b >> 31
    return b.bitwise_xor_(flip.bitwise_and_(_LOW31))


def bits_to_score(o: int) -> float:
    """Inverse of :func:`score_bits` for one value."""
    b = o ^ ((o >> 31) & _LOW31)
    return float(np.array([b], dtype=np.int32).view(np.float32)[0])


def descending_bits(scores: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``~o(s)`` of scores [n] as int32 [n] (written into ``out`` when given): ascending = scores descending."""
    return torch.bitwise_not(score_bits(scores), out=out)


def positive_keys(bits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Sorted int64 keys ``bits << 32 | g`` [P] of the positives, from their :func:`descending_bits`
    [P] and their groups g >= 1 [P] (region ids, or 1 without regions)."""
    return sort_((bits.to(torch.int64) << 32).bitwise_or_(groups))


@dataclass(frozen=True)
class SortedSamples:
    """The int32 :func:`descending_bits` of all n samples, [n], sorted ascending within each run of
    ``run`` consecutive samples (the last run may be shorter): S = ceil(n / run) sorted runs."""

    bits: torch.Tensor
    run: int

    def count_below(self, values: torch.Tensor, right: bool = False) -> torch.Tensor:
        """[G] int64: the samples whose bits are < ``values`` [G] int32 (<= with ``right``), i.e.
        scoring > (>=) the scores of ``values``: the sum over the runs of their ``searchsorted``."""
        return sum(torch.searchsorted(part, values, right=right) for part in self.bits.split(self.run))


def sort_bits_(bits: torch.Tensor) -> SortedSamples:
    """Sort the int32 :func:`descending_bits` [n] of all samples ascending, in place, in runs of
    ``SORT_RUN`` samples. CPU: one run, numpy's SIMD sort (no extra memory; more runs would sort a
    little faster but multiply the counts' searches, G S of them). CUDA: runs of 2^26, each sorted by
    ``torch.sort`` and its copy written back, so that its temporaries (the sorted values, the int64
    indices, the int64 iota they are sorted from and cub's alternate buffers: 4 + 8 + 8 + 12 = 32 B
    per sample) take ``SORT_TEMP_BYTES`` for one run instead of 32 B per sample of all.

    NaN scores sort beyond +-inf, to the ends of their run: ``ValueError`` when a value there is one."""
    run = SORT_RUN["cpu" if bits.device.type == "cpu" else "cuda"] or max(1, bits.numel())
    for part in bits.split(run):
        if part.device.type == "cpu":
            part.numpy().sort()
        else:
            part.copy_(torch.sort(part).values)
        if int(part[0]) < _POS_INF_BITS or int(part[-1]) > _NEG_INF_BITS:
            raise ValueError("scores contain NaN")
    return SortedSamples(bits, run)


def sort_(values: torch.Tensor) -> torch.Tensor:
    """Integers [n] sorted ascending: in place on CPU (numpy's SIMD sort, no extra memory);
    ``torch.sort(...).values`` elsewhere (a sorted copy; the int64 indices torch also returns, and
    its radix sort's buffers, are temporaries)."""
    if values.device.type == "cpu":
        values.numpy().sort()
        return values
    return torch.sort(values).values


@dataclass(frozen=True)
class SweepResult:
    auroc: float
    ap: float
    f1_max: float
    f1_threshold: float
    aupro: float


def sweep(samples: SortedSamples, pos_keys: torch.Tensor, region_weight: torch.Tensor | None = None,
          fpr_limit: float = 0.3) -> SweepResult:
    """All metrics from the sorted samples and positives (formulas in the module docstring).

    samples:       the int32 ``~o(s)`` of every sample, sorted by :func:`sort_bits_`
    pos_keys:      [P] int64 keys of the positives (a subset of the samples), from :func:`positive_keys`
    region_weight: [R + 1] float64 on the samples' device, 0 at index 0 and 1 / area(r) at r; ``None``
                   skips AUPRO (the groups are then unused)
    Memory: O(P); with the gathering of the positives about 170 B per positive when every positive
    score is distinct (measured on CPU), under ``fsadlib.metrics.pixel.BYTES_PER_DEFECT_PIXEL``.
    """
    n, n_pos = samples.bits.numel(), pos_keys.numel()
    n_neg = n - n_pos
    nan = float("nan")
    if n_pos == 0:
        return SweepResult(nan, nan, nan, nan, nan)
    high = pos_keys >> 32
    first = torch.ones(n_pos, dtype=torch.bool, device=pos_keys.device)
    torch.ne(high[1:], high[:-1], out=first[1:])
    step_first = first.nonzero().squeeze(1)            # index among positives of each step's first one
    step_bits = high[step_first].to(torch.int32)       # ~o(t_j)
    before = samples.count_below(step_bits)                    # scoring > t_j
    n_ge = samples.count_below(step_bits, right=True)          # N_j: scoring >= t_j
    tp = torch.cat([step_first[1:], step_first.new_tensor([n_pos])])   # TP_j
    d_tp = tp.diff(prepend=tp.new_zeros(1))
    fp = n_ge - tp
    d_fp = (n_ge - before) - d_tp
    auroc = (d_tp * (2 * (n_neg - fp) + d_fp)).sum().item() / (2 * n_pos * n_neg) if n_neg else nan
    ap = (d_tp.double() * tp / n_ge).sum().item() / n_pos
    f1 = 2 * tp.double() / (n_ge + n_pos)
    best = int(f1.argmax())
    aupro = nan
    if region_weight is not None and region_weight.numel() > 1 and n_neg:
        w = region_weight.index_select(0, pos_keys & _LOW32).cumsum(0)[tp - 1]  # W_j
        fp_before = before - (tp - d_tp)
        x = torch.stack([fp_before, fp], 1).reshape(-1).double() / n_neg
        y = torch.stack([torch.cat([w.new_zeros(1), w[:-1]]), w], 1).reshape(-1) / (region_weight.numel() - 1)
        one = x.new_ones(1)
        x, y = torch.cat([x.new_zeros(1), x, one]), torch.cat([y.new_zeros(1), y, one])
        aupro = trapezoid_to(x, y, fpr_limit).item() / fpr_limit
    return SweepResult(auroc=auroc, ap=ap, f1_max=f1[best].item(),
                       f1_threshold=bits_to_score(~int(step_bits[best])), aupro=aupro)


def trapezoid_to(x: torch.Tensor, y: torch.Tensor, limit: float) -> torch.Tensor:
    """Area under the polyline (x_0, y_0) ... (x_m, y_m) (x non-decreasing) over x in [x_0, limit]:
    full segments with x_j <= limit, plus the segment crossing ``limit`` cut at a linearly
    interpolated end point (MVTec AD ``generic_util.trapezoid`` with ``x_max``).
    x, y: [..., m + 1]; one area per leading index (a batch of curves at once)."""
    x0, x1, y0, y1 = x[..., :-1], x[..., 1:], y[..., :-1], y[..., 1:]
    full = torch.where(x1 <= limit, 0.5 * (y0 + y1) * (x1 - x0), 0.0)
    cross = (x0 <= limit) & (x1 > limit)
    y_lim = y0 + (y1 - y0) * (limit - x0) / torch.where(cross, x1 - x0, 1.0)
    part = torch.where(cross, 0.5 * (y0 + y_lim) * (limit - x0), 0.0)
    return full.sum(-1) + part.sum(-1)


def check_fpr_limit(fpr_limit: float) -> float:
    if not (isinstance(fpr_limit, (int, float)) and 0 < fpr_limit <= 1 and math.isfinite(fpr_limit)):
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    return float(fpr_limit)
