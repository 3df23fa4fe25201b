"""Figures: seaborn plots of results, map overlays (per-category normalisation, resampling to one
display size, ground-truth contour), one colour per method everywhere, and the ipywidgets explorer
over saved results (:class:`Explorer`, imported from ``fsadlib.viz.explorer`` so the plots do not
need ipywidgets)."""

from fsadlib.viz.overlay import (
           OUTLINE_COLOUR,
           category_range,
           draw_overlay,
           normalise,
           resample_map,
           resize_image,
)
from fsadlib.viz.palette import METHOD_COLOURS, method_colour, method_palette
from fsadlib.viz.plots import (
           ablation_curve,
           ablation_curves,
           category_heatmaps,
           efficiency_plot,
           metric_vs_k,
           save_figure,
)

__all__ = ["METHOD_COLOURS", "OUTLINE_COLOUR", "ablation_curve", "ablation_curves", "category_heatmaps",
           "category_range", "draw_overlay", "efficiency_plot", "method_colour", "method_palette", "metric_vs_k",
           "normalise", "resample_map", "resize_image", "save_figure"]
