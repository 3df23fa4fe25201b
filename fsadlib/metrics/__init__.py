"""Exact image and pixel metrics: AUROC, AP, F1-max and the MVTec AD AUPRO, from one sort.

- :func:`image_metrics` (scores [N], labels [N]) -> {"auroc", "ap", "f1_max", "f1_threshold"}
- :func:`pixel_metrics` (maps [N,H,W], masks [N,H,W], fpr_limit) -> {"auroc", "ap", "f1_max", "aupro"}
- :func:`legacy_cflow_aupro`: the biased 200-threshold variant of many CLIP-AD repos, for comparison only

numpy or torch inputs; the work runs where the data is (CPU or CUDA). The algorithm and its formulas:
:mod:`fsadlib.metrics.sweep`; memory per pixel: :mod:`fsadlib.metrics.pixel`. Results carry no
provenance keys; :data:`METRIC_DEFINITIONS` names what each number is and is written beside them
(``fsadlib.evaluate`` records it in every metrics.json together with ``fpr_limit``).
"""

from fsadlib.metrics.image import image_metrics
from fsadlib.metrics.legacy import legacy_cflow_aupro
from fsadlib.metrics.pixel import BYTES_PER_PIXEL, pixel_metrics

METRIC_DEFINITIONS: dict[str, str] = {
    "auroc": "exact: trapezoid over every distinct score, ties count half (= sklearn roc_auc_score)",
    "ap": "exact step-wise sum (R_n - R_n-1) P_n over every distinct score "
          "(= sklearn average_precision_score)",
    "f1_max": "exact maximum of F1 over every distinct score (= max over sklearn precision_recall_curve)",
    "aupro": "mvtec_ad_exact: 8-connected GT regions, every distinct score, FPR over all defect-free "
             "pixels, trapezoid from (0,0) interpolated at fpr_limit, divided by fpr_limit",
    "aupro_cflow200_legacy": "cflow-style cal_pro_score: 200 score-spaced thresholds, FPR < fpr_limit "
                             "min-max rescaled to [0,1], sklearn auc (biased; comparison only)",
}

__all__ = ["BYTES_PER_PIXEL", "METRIC_DEFINITIONS", "image_metrics", "legacy_cflow_aupro", "pixel_metrics"]
