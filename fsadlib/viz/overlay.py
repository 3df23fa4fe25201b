"""Anomaly-map overlays with per-category normalisation and the ground-truth contour.

A method's maps are on its own scale, so each map is shown after min-max normalisation over all
maps of its (method, category) run: m' = clip((m - lo) / (hi - lo), 0, 1), lo / hi the minimum /
maximum over the category's saved maps [N, E, E]. A constant category maps to 0 everywhere.
Methods evaluated at different resolutions E_A != E_B are shown on one display image of size D:
each map is resampled to [D, D] (:func:`resample_map`) before it is drawn or subtracted.
The ground-truth contour is drawn in ``OUTLINE_COLOUR``: lime, a colour that neither the map
colours (jet) nor the difference colours (RdBu) contain, visible on white and dark images alike.
"""

from __future__ import annotations

import numpy as np
from matplotlib.axes import Axes
from PIL import Image


def category_range(maps: np.ndarray) -> tuple[float, float]:
    """(lo, hi) over every pixel of a category's maps [N, E, E] (float16 maps are read as float32)."""
    maps = np.asarray(maps, np.float32)
    if maps.size == 0:
        raise ValueError("category_range: no maps")
    return float(maps.min()), float(maps.max())


def normalise(amap: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``clip((amap - lo) / (hi - lo), 0, 1)`` as float32 (zeros when hi == lo)."""
    amap = np.asarray(amap, np.float32)
    if hi <= lo:
        return np.zeros_like(amap)
    return np.clip((amap - lo) / (hi - lo), 0.0, 1.0)


OUTLINE_COLOUR = "#00ff00"


def resample_map(amap: np.ndarray, size: int) -> np.ndarray:
    """Map [H, W] -> float32 [size, size] by bilinear interpolation (PIL: pixel centres aligned, as
    ``torch.nn.functional.interpolate(..., align_corners=False)`` when enlarging; area-weighted when
    shrinking, so no detail aliases). A map already [size, size] is returned as float32 unchanged."""
    amap = np.asarray(amap, np.float32)
    if amap.ndim != 2:
        raise ValueError(f"resample_map: expected a map [H, W], got shape {amap.shape}")
    if amap.shape == (size, size):
        return amap
    return np.asarray(Image.fromarray(amap).resize((size, size), Image.BILINEAR), np.float32)


def resize_image(image: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3] (bicubic, as the model input transform)."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC))


def draw_overlay(ax: Axes, image: np.ndarray, amap: np.ndarray | None = None, mask: np.ndarray | None = None,
                 alpha: float = 0.5, title: str = "", cmap: str = "jet", limits: tuple[float, float] = (0.0, 1.0)
                 ) -> None:
    """Image [E, E, 3] uint8, optionally a map [E, E] (``cmap`` over ``limits``, default an already
    normalised map in [0, 1] in jet; ``alpha``) and the ground-truth contour (level 0.5 of ``mask``
    [E, E] in {0, 1}, ``OUTLINE_COLOUR``) on ``ax``."""
    ax.imshow(image)
    if amap is not None:
        if amap.shape != image.shape[:2]:
            raise ValueError(f"map {amap.shape} and image {image.shape[:2]} differ in size")
        ax.imshow(amap, cmap=cmap, vmin=limits[0], vmax=limits[1], alpha=alpha)
    if mask is not None and np.any(mask > 0.5):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
        ax.contour(mask.astype(np.float32), levels=[0.5], colors=OUTLINE_COLOUR, linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
