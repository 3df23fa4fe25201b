"""Slow, literal references for the metric tests, and small MVTec-like test data."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def slow_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """AUPRO by the definition: a loop over every distinct score t, PRO(t) = mean over the 8-connected
    regions (``scipy.ndimage.label`` per mask) of the fraction >= t, FPR(t) over defect-free pixels;
    curve (0,0) ... (1,1), trapezoid up to ``fpr_limit`` with the crossing segment interpolated."""
    regions = []
    for m, g in zip(maps, masks):
        ids, n = ndimage.label(g, structure=np.ones((3, 3)))
        regions += [m[ids == r] for r in range(1, n + 1)]
    normal = maps[masks == 0]
    xs, ys = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        xs.append(float(np.mean(normal >= t)))
        ys.append(float(np.mean([np.mean(r >= t) for r in regions])))
    xs.append(1.0)
    ys.append(1.0)
    area = 0.0
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        if x1 <= fpr_limit:
            area += 0.5 * (y0 + y1) * (x1 - x0)
        elif x0 <= fpr_limit:
            y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            area += 0.5 * (y0 + y_lim) * (fpr_limit - x0)
    return area / fpr_limit


def mvtec_like(n: int, size: int, seed: int, levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Maps [n, size, size] float32 and bool masks: half the images hold 1-3 ellipses; maps are smooth
    noise plus the blurred mask times a random gain (performance.md Appendix A). ``levels``
    quantises the maps to that many values, which makes many ties."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(0, n, 2):
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0, size, 2)
            ry, rx = rng.uniform(0.005, 0.12, 2) * size + 0.5
            masks[i] |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    noise = ndimage.zoom(rng.random((n, 4, 4)), (1, size / 4, size / 4), order=1)
    maps = noise + ndimage.gaussian_filter(masks.astype(float), (0, 2, 2)) * rng.uniform(0.2, 2, (n, 1, 1))
    if levels:
        maps = np.round(maps / maps.max() * (levels - 1))
    return maps.astype(np.float32), masks
