"""Figures: seaborn plots of results, map overlays (per-category normalisation, ground-truth contour),
and the ipywidgets explorer over saved results (:class:`Explorer`, imported from
``fsadlib.viz.explorer`` so the plots do not need ipywidgets)."""

from fsadlib.viz.overlay import category_range, draw_overlay, normalise, resize_image
from fsadlib.viz.plots import (
           ablation_curve,
           ablation_curves,
           category_heatmaps,
           efficiency_plot,
           metric_vs_k,
           save_figure,
)

__all__ = ["ablation_curve", "ablation_curves", "category_heatmaps", "category_range", "draw_overlay", "efficiency_plot",
           "metric_vs_k", "normalise", "resize_image", "save_figure"]
