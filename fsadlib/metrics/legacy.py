"""LEGACY, for comparison with published numbers only: the cflow-style 200-threshold "AUPRO".

``cal_pro_score`` of cflow-ad, copied into AnomalyCLIP, APRIL-GAN, KAG-prompt and others
(research/performance.md 1.2-1.3). It is NOT the MVTec AD AUPRO (:func:`fsadlib.metrics.pixel_metrics`):

- thresholds: ``numpy.arange(min, max, (max - min) / max_step)`` over all maps (equally spaced in
  score, so few of them fall in the FPR < 0.3 band), a pixel is positive when score > t;
- PRO(t): mean over the 8-connected regions of all masks of the fraction above t; FPR(t) over all
  defect-free pixels;
- keeps the points with FPR < ``expect_fpr`` (strict), min-max rescales those FPRs to [0, 1] (no
  (0, 0) anchor, no interpolation at the limit) and takes ``sklearn.metrics.auc``.

On MVTec-like maps it reads 0.4-0.7 points below the exact value. This implementation gives the
same numbers as the original loop (to float rounding) from two sorts instead of re-binarising and
re-labelling every map at every threshold; it holds float copies of the pixels (about 16 B/pixel).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import auc

from fsadlib.metrics.inputs import as_tensor, check_binary
from fsadlib.metrics.regions import label_regions


def legacy_cflow_aupro(maps: Any, masks: Any, max_step: int = 200, expect_fpr: float = 0.3) -> float:
    """cflow-style AUPRO of maps [N, H, W] against binary masks [N, H, W] (see the module docstring)."""
    amaps = as_tensor(maps, "maps").cpu().numpy()
    defect = check_binary(as_tensor(masks, "masks").cpu(), "masks")
    if amaps.ndim != 3 or tuple(defect.shape) != amaps.shape:
        raise ValueError(f"maps {amaps.shape} and masks {tuple(defect.shape)} must be equal [N, H, W]")
    regions = label_regions(defect, defect.any(2).numpy(), defect.any(1).numpy())
    ids = np.zeros(amaps.shape, dtype=np.int32)
    for i, rs, cs, box in regions.boxes:
        ids[i, rs, cs] = box.numpy()
    ids, flat = ids.ravel(), amaps.ravel()
    normal = np.sort(flat[ids == 0])
    order = np.argsort(flat[ids > 0], kind="stable")
    lesion = flat[ids > 0][order]
    weight = (1.0 / regions.areas)[ids[ids > 0] - 1][order]
    above = np.concatenate([np.cumsum(weight[::-1])[::-1], [0.0]])  # weight of lesion[j:] at j

    min_th, max_th = amaps.min(), amaps.max()
    thresholds = np.arange(min_th, max_th, (max_th - min_th) / max_step)
    fprs = (normal.size - np.searchsorted(normal, thresholds, side="right")) / normal.size
    pros = above[np.searchsorted(lesion, thresholds, side="right")] / regions.count
    keep = fprs < expect_fpr
    fprs = fprs[keep]
    with np.errstate(invalid="ignore", divide="ignore"):
        fprs = (fprs - fprs.min()) / (fprs.max() - fprs.min())
    return float(auc(fprs, pros[keep]))
