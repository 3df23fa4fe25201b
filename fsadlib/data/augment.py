"""Anomaly synthesis on normal images (for training on normal data, e.g. KAG-prompt).

Three modes; the first two return an exact mask (the pixels that were replaced), all return
``label = [mask.max() > 0]``:

- ``"perlin"`` (DRAEM, Zavrtanik et al. 2021): ``m = [P > 0.5]`` with ``P`` Perlin noise of
  ``2^a x 2^b`` lattice cells (``a, b`` uniform in ``0..PERLIN_MAX_EXP``), redrawn until non-empty;
  ``x' = x (1 - m) + ((1 - beta) s + beta x) m`` with ``beta ~ U(0, MAX_BETA)`` and source ``s``
  (a texture image given by the caller, e.g. another category; default: a random-colour fractal
  Perlin texture, since DTD is not available offline).
- ``"cutpaste"`` (CutPaste, Li et al. 2021; NSA without Poisson blending): a rectangle of area
  ``U(2 %, 15 %)`` of the image and aspect ``U(0.3, 3.3)`` is cut from the source (default: the image
  itself) and pasted at a random place; ``m`` is the pasted rectangle.
- ``"nsa"`` (Natural Synthetic Anomalies, as KAG-prompt trains: :mod:`fsadlib.data.nsa`): up to
  ``num_patches`` patches of the source (default: the image itself), resized and shifted, Poisson-blended
  with OpenCV's normal clone, with background skipping; ``m`` is the soft logistic-intensity label in
  [0, 1). The image goes through uint8 (the blend works on 0-255 values); pixels the blend left
  unchanged keep their exact input values. ``nsa`` holds the category's parameters (default: the fixed
  VisA ones, :func:`fsadlib.data.nsa.nsa_params`).

With probability ``1 - anomaly_prob`` the image is returned unchanged with an empty mask and label 0
(DRAEM uses 0.5). Images are float ``[0, 1]`` before CLIP normalisation: numpy ``[H, W, C]`` or torch
``[C, H, W]``; the output has the input's type and layout, the mask is ``[H, W]`` float32. The result
is a function of the inputs and of the ``numpy.random.Generator`` state only.
"""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch

from fsadlib.data.noise import fractal_noise, perlin_noise
from fsadlib.data.nsa import NSAParams, nsa_anomaly

PERLIN_MAX_EXP = 6
PERLIN_THRESHOLD = 0.5
MAX_BETA = 0.8
CUT_AREA = (0.02, 0.15)
CUT_ASPECT = (0.3, 3.3)
MODES = ("perlin", "cutpaste", "nsa")

ImageT = TypeVar("ImageT", np.ndarray, torch.Tensor)


def perlin_mask(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """DRAEM mask: bool ``[H, W]``, ``P > PERLIN_THRESHOLD``, redrawn until at least one pixel is set.

    ``P`` is rescaled to max |P| = 1 first so every lattice size can pass the threshold.
    """
    while True:
        res = tuple(int(2 ** rng.integers(0, PERLIN_MAX_EXP)) for _ in range(2))
        noise = perlin_noise(shape, res, rng)
        mask = noise / (np.abs(noise).max() + 1e-12) > PERLIN_THRESHOLD
        if mask.any():
            return mask


def synthesize_anomaly(image: ImageT, rng: np.random.Generator, source: ImageT | None = None,
                       mode: Literal["perlin", "cutpaste", "nsa"] = "perlin", anomaly_prob: float = 1.0,
                       nsa: NSAParams | None = None) -> tuple[ImageT, ImageT, int]:
    """``(anomalous image, mask [H, W], label)`` for a normal ``image`` (see the module docstring)."""
    is_torch = isinstance(image, torch.Tensor)
    x = image.permute(1, 2, 0).cpu().numpy() if is_torch else np.asarray(image)
    x = x.astype(np.float32)
    height, width = x.shape[:2]
    mask = np.zeros((height, width), np.float32)
    out = x.copy()
    if rng.random() < anomaly_prob:
        src = None if source is None else (source.permute(1, 2, 0).cpu().numpy() if is_torch else np.asarray(source))
        if src is not None and src.shape != x.shape:
            raise ValueError(f"source shape {src.shape} differs from image shape {x.shape} (HWC)")
        if mode == "perlin":
            if src is None:
                src = _noise_texture((height, width, x.shape[2]), rng)
            inside = perlin_mask((height, width), rng)
            beta = rng.uniform(0.0, MAX_BETA)
            out[inside] = (1 - beta) * src[inside] + beta * x[inside]
            mask = inside.astype(np.float32)
        elif mode == "cutpaste":
            src = x if src is None else src.astype(np.float32)
            h, w = _rectangle((height, width), rng)
            sy, sx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            ty, tx = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            out[ty:ty + h, tx:tx + w] = src[sy:sy + h, sx:sx + w]
            mask[ty:ty + h, tx:tx + w] = 1.0
        elif mode == "nsa":
            dest_u8 = _to_uint8(x)
            result = nsa_anomaly(dest_u8, dest_u8 if src is None else _to_uint8(src), rng, nsa or NSAParams())
            changed = (result.image != dest_u8).any(axis=-1)
            out[changed] = result.image[changed].astype(np.float32) / 255.0
            mask = result.label
        else:
            raise KeyError(f"unknown anomaly synthesis mode '{mode}'; known: {list(MODES)}")
    label = int(mask.max() > 0)
    if is_torch:
        return (torch.from_numpy(out).permute(2, 0, 1).to(image.device, image.dtype),
                torch.from_numpy(mask).to(image.device), label)
    return out, mask, label


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """Float ``[0, 1]`` -> uint8 0-255 (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def _rectangle(shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """Height and width of a CutPaste rectangle (area and aspect drawn as above, clipped to the image)."""
    area = rng.uniform(*CUT_AREA) * shape[0] * shape[1]
    aspect = np.exp(rng.uniform(np.log(CUT_ASPECT[0]), np.log(CUT_ASPECT[1])))
    h = int(np.clip(round(np.sqrt(area * aspect)), 1, shape[0]))
    w = int(np.clip(round(np.sqrt(area / aspect)), 1, shape[1]))
    return h, w


def _noise_texture(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A random two-colour fractal-noise texture, float32 ``[H, W, C]`` in [0, 1]."""
    t = np.clip(0.5 + fractal_noise(shape[:2], 4, 3, rng), 0, 1)[..., None]
    c0, c1 = rng.uniform(0, 1, size=(2, shape[2])).astype(np.float32)
    return (c0 * (1 - t) + c1 * t).astype(np.float32)
