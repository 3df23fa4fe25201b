"""NSA: Natural Synthetic Anomalies (Schlueter et al., ECCV 2022), as KAG-prompt trains with them.

``nsa_anomaly(dest, source, rng, params)`` on uint8 ``[H, W, C]`` images:

1. Object masks (only with ``params.background = (b, t)``): ``O(x) = [|mean_c x - b| > t]``, then a
   7 x 7 median filter (OpenCV ``medianBlur``), for the destination and the source image.
2. Patch 1 always, each further patch (up to ``num_patches``) with probability 1/2, each into the
   image the previous patches produced:
   - half-widths ``w_d = clip((g_0 + Gamma(shape, scale)) * D, round(lo_d D), round(hi_d D))`` for
     ``d`` = height, width (``gamma_params = (shape, scale, g_0)``; ``width_bounds = ((lo, hi), ...)``);
     a source box of ``2 w_d`` around a uniform centre, redrawn (at most ``MAX_ATTEMPTS``) until its
     object fraction exceeds ``min_object_pct``;
   - the source patch is resized (OpenCV bilinear) by ``s = clip(N(1, 0.5), *resize_bounds)``, each
     side kept within the width bounds, and a destination centre is drawn until the patch holds enough object and its source
     object overlaps the destination object by more than ``min_overlap_pct``;
   - the blend mask is the patch minus the pixels that are background in both images; the patch is
     Poisson-blended (``cv2.seamlessClone``, ``NORMAL_CLONE``: inside the mask the result ``f``
     solves ``laplace f = laplace src`` with ``f = dest`` on the mask boundary) under that mask plus the
     shared background, border pixels excluded. A patch that finds no place, or whose clone mask has
     fewer than ``MIN_CLONE_PIXELS`` pixels (OpenCV fails on those), is skipped.
3. Soft label (``logistic-intensity``): with ``M`` the union of the blend masks,
   ``L0 = median5([mean_c |M dest - M out| > tol])``, ``I = median_disk5(mean_c |L0 dest - L0 out|)``,
   ``label = L0 / (1 + exp(-k (I - x0)))`` with ``intensity_logistic = (k, x0)`` on the 0-255 scale,
   restricted to ``M`` (the public code's 5 x 5 median can spill up to two pixels past a concave corner
   of two overlapping patches; that is the only difference).

Per-category parameters (``nsa_params(category)``) come from ``nsa_tables.json``: the public code's
per-class tables for MVTec AD, its fixed parameters for VisA and any other category. The result is a
function of the inputs and of the ``numpy.random.Generator`` state only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

MAX_ATTEMPTS = 200
MIN_CLONE_PIXELS = 50
TABLES = Path(__file__).with_name("nsa_tables.json")

Range = tuple[float, float]


@dataclass(frozen=True)
class NSAParams:
    """One category's NSA parameters (see the module docstring; 0-255 scale for intensities)."""

    width_bounds: tuple[Range, Range] = ((0.03, 0.4), (0.03, 0.4))
    intensity_logistic: Range = (1 / 12, 24.0)
    background: Range | None = None
    resize_bounds: Range = (0.5, 2.0)
    num_patches: int = 2
    gamma_params: tuple[float, float, float] | None = (2.0, 0.05, 0.03)
    min_object_pct: float = 0.0
    min_overlap_pct: float = 0.25
    label_tolerance: float = 1.0
    shift: int = 1

    def __post_init__(self) -> None:
        if self.num_patches < 1:
            raise ValueError(f"NSA num_patches must be >= 1, got {self.num_patches}")
        for lo, hi in self.width_bounds:
            if not 0 < lo < hi < 0.5:
                raise ValueError(f"NSA width_bounds must satisfy 0 < low < high < 0.5, got {self.width_bounds}")


class Patch(NamedTuple):
    """One blended patch: destination rows/cols ``[y0, y1) x [x0, x1)``, its uint8 blend mask
    ``[y1 - y0, x1 - x0]`` and the placed source object mask (``None`` without background skipping)."""

    box: tuple[int, int, int, int]
    blend_mask: np.ndarray
    source_object: np.ndarray | None


class NSAResult(NamedTuple):
    image: np.ndarray          # uint8 [H, W, C]
    label: np.ndarray          # float32 [H, W] in [0, 1)
    patches: list[Patch]


@cache
def _tables() -> dict:
    with open(TABLES) as fh:
        return json.load(fh)


def nsa_params(category: str) -> NSAParams:
    """The public code's parameters for ``category``: its MVTec AD row, else the fixed (VisA) ones."""
    tables = _tables()
    row = {**tables["common"], **tables["fixed"], **tables["mvtec"].get(category, {})}
    return params_from_dict(row)


def params_from_dict(values: dict) -> NSAParams:
    """``NSAParams`` from JSON-style lists (``KeyError`` naming unknown keys)."""
    known = {f.name for f in fields(NSAParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise KeyError(f"unknown NSA parameter(s) {unknown}; known: {sorted(known)}")

    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    return NSAParams(**{k: tup(v) for k, v in values.items()})


def object_mask(image: np.ndarray, background: Range | None) -> np.ndarray | None:
    """uint8 ``[H, W]`` 1 = object: ``|mean_c image - b| > t``, 7 x 7 median; ``None`` without ``background``."""
    if background is None:
        return None
    b, t = background
    raw = (np.abs(image.mean(axis=-1) - b) > t).astype(np.uint8)
    return cv2.medianBlur(raw, 7)


def nsa_anomaly(dest: np.ndarray, source: np.ndarray, rng: np.random.Generator,
                params: NSAParams = NSAParams()) -> NSAResult:
    """Blend NSA patches of ``source`` into ``dest`` (uint8 ``[H, W, 3]``, same shape); see the module."""
    if dest.dtype != np.uint8 or source.dtype != np.uint8 or dest.shape != source.shape or dest.shape[-1:] != (3,):
        raise ValueError(f"NSA needs two uint8 [H, W, 3] images of one shape, got {dest.dtype} {dest.shape} "
                         f"and {source.dtype} {source.shape}")
    dest_obj, src_obj = object_mask(dest, params.background), object_mask(source, params.background)
    out = dest.copy()
    region = np.zeros(dest.shape[:2], np.uint8)
    patches = []
    for i in range(params.num_patches):
        if i > 0 and rng.integers(2) == 0:
            continue
        patch = _blend_patch(out, source, dest_obj, src_obj, rng, params)
        if patch is not None:
            out, placed = patch
            y0, y1, x0, x1 = placed.box
            region[y0:y1, x0:x1] = placed.blend_mask
            patches.append(placed)
    return NSAResult(out, soft_label(dest, out, region, params), patches)


def soft_label(dest: np.ndarray, out: np.ndarray, region: np.ndarray, params: NSAParams) -> np.ndarray:
    """Logistic-intensity label (step 3 of the module docstring), float32 ``[H, W]``."""
    from skimage.filters import median  # imported here: skimage.morphology costs ~1 s at import
    from skimage.morphology import disk

    m = region[..., None].astype(np.float64)
    changed = (np.abs(m * dest - m * out).mean(axis=-1) > params.label_tolerance).astype(np.uint8)
    changed = cv2.medianBlur(changed, 5)
    c = changed[..., None].astype(np.float64)
    intensity = median(np.abs(c * dest - c * out).mean(axis=-1), disk(5))
    k, x0 = params.intensity_logistic
    return (changed * region / (1 + np.exp(-k * (intensity - x0)))).astype(np.float32)


def _half_widths(shape: tuple[int, ...], rng: np.random.Generator, params: NSAParams
                 ) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Bounds ``((lo_h, hi_h), (lo_w, hi_w))`` in pixels and the drawn half-widths ``(w_h, w_w)``."""
    bounds = tuple((int(np.round(lo * n)), int(np.round(hi * n))) for (lo, hi), n in zip(params.width_bounds, shape))
    if params.gamma_params is not None:
        a, scale, offset = params.gamma_params
        widths = tuple(int(np.clip((offset + rng.gamma(a, scale)) * n, lo, hi)) for (lo, hi), n in zip(bounds, shape))
    else:
        widths = tuple(int(rng.integers(lo, hi)) for lo, hi in bounds)
    return bounds[0], bounds[1], widths


def _blend_patch(dest: np.ndarray, source: np.ndarray, dest_obj: np.ndarray | None, src_obj: np.ndarray | None,
                 rng: np.random.Generator, params: NSAParams) -> tuple[np.ndarray, Patch] | None:
    """One patch of step 2; ``None`` when it finds no place or its clone mask is too small."""
    height, width = dest.shape[:2]
    (lo_h, hi_h), (lo_w, hi_w), (w_h, w_w) = _half_widths(dest.shape, rng, params)
    skip = dest_obj is not None
    for _ in range(MAX_ATTEMPTS):
        cy, cx = rng.integers(lo_h, height - lo_h), rng.integers(lo_w, width - lo_w)
        sy0, sy1 = max(cy - w_h, 0), min(cy + w_h, height)
        sx0, sx1 = max(cx - w_w, 0), min(cx + w_w, width)
        if not skip or src_obj[sy0:sy1, sx0:sx1].mean() > params.min_object_pct:
            break
    else:
        return None
    src = source[sy0:sy1, sx0:sx1]
    patch_mask = np.ones(src.shape[:2], np.uint8)
    src_patch_obj = None if not skip else src_obj[sy0:sy1, sx0:sx1]
    if params.shift:
        h, w = src.shape[:2]
        scale = np.clip(rng.normal(1, 0.5), *params.resize_bounds)
        new_h = np.clip(scale * h, lo_h, hi_h)
        new_w = int(np.clip(int(new_h / h * w), lo_w, hi_w))
        new_h = int(np.clip(int(new_w / w * h), lo_h, hi_h))
        src = cv2.resize(src, (new_w, new_h))
        patch_mask = cv2.resize(patch_mask, (new_w, new_h))
        if skip:
            src_patch_obj = cv2.resize(src_patch_obj, (new_w, new_h))
        box = _destination(dest_obj, src_patch_obj, patch_mask, (height, width), rng, params)
        if box is None:
            return None
    else:
        box = (sy0, sy1, sx0, sx1)
    y0, y1, x0, x1 = box
    clone_mask = patch_mask
    if skip:
        dest_patch_obj = dest_obj[y0:y1, x0:x1]
        patch_mask = patch_mask & (src_patch_obj | dest_patch_obj)
        clone_mask = patch_mask | ((1 - src_patch_obj) & (1 - dest_patch_obj))
    clone_mask = 255 * clone_mask
    clone_mask[[0, -1]] = 0
    clone_mask[:, [0, -1]] = 0
    if (clone_mask > 0).sum() < MIN_CLONE_PIXELS:
        return None
    center = (int(x1 - (x1 - x0) // 2), int(y0 + (y1 - y0) // 2))  # (x, y), as the public code
    try:
        out = cv2.seamlessClone(np.ascontiguousarray(src), dest, clone_mask, center, cv2.NORMAL_CLONE)
    except cv2.error:
        return None
    return out, Patch(box, patch_mask, src_patch_obj)


def _destination(dest_obj: np.ndarray | None, src_obj: np.ndarray | None, patch_mask: np.ndarray,
                 shape: tuple[int, int], rng: np.random.Generator, params: NSAParams
                 ) -> tuple[int, int, int, int] | None:
    """Destination box of a ``patch_mask``-sized patch (rows, cols), drawn until it holds enough object
    and overlaps the destination object (with background skipping); ``None`` after ``MAX_ATTEMPTS``."""
    h, w = patch_mask.shape
    if h // 2 + 1 >= shape[0] - h // 2 - 1 or w // 2 + 1 >= shape[1] - w // 2 - 1:
        return None
    for _ in range(MAX_ATTEMPTS):
        cy = int(rng.integers(h // 2 + 1, shape[0] - h // 2 - 1))
        cx = int(rng.integers(w // 2 + 1, shape[1] - w // 2 - 1))
        box = (cy - h // 2, cy + (h + 1) // 2, cx - w // 2, cx + (w + 1) // 2)
        if dest_obj is None:
            return box
        both = dest_obj[box[0]:box[1], box[2]:box[3]] & src_obj & patch_mask
        n_obj = src_obj.sum()
        if n_obj / patch_mask.size > params.min_object_pct and both.sum() / max(n_obj, 1) > params.min_overlap_pct:
            return box
    return None
