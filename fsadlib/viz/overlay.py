"""Anomaly-map overlays with per-category normalisation and the ground-truth contour.

A method's maps are on its own scale, so each map is shown after min-max normalisation over all
maps of its (method, category) run: m' = clip((m - lo) / (hi - lo), 0, 1), lo / hi the minimum /
maximum over the category's saved maps [N, E, E]. A constant category maps to 0 everywhere.
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


def resize_image(image: Image.Image, size: int) -> np.ndarray:
    """RGB uint8 [size, size, 3] (bicubic, as the model input transform)."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.BICUBIC))


def draw_overlay(ax: Axes, image: np.ndarray, amap: np.ndarray | None = None, mask: np.ndarray | None = None,
                 alpha: float = 0.5, title: str = "") -> None:
    """Image [E, E, 3] uint8, optionally an already normalised map [E, E] in [0, 1] (jet, ``alpha``)
    and the ground-truth contour (level 0.5 of ``mask`` [E, E] in {0, 1}, white) on ``ax``."""
    ax.imshow(image)
    if amap is not None:
        if amap.shape != image.shape[:2]:
            raise ValueError(f"map {amap.shape} and image {image.shape[:2]} differ in size")
        ax.imshow(amap, cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha)
    if mask is not None and np.any(mask > 0.5):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask {mask.shape} and image {image.shape[:2]} differ in size")
        ax.contour(mask.astype(np.float32), levels=[0.5], colors="white", linewidths=1.2)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
