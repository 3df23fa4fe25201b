"""Gradient (Perlin) noise, shared by the synthetic textures and the DRAEM-style anomaly masks.

``perlin_noise(shape, res, rng)``: random unit gradients g on a ``(res_y + 1) x (res_x + 1)``
lattice; a pixel at lattice coordinates ``p = (y * res_y / H, x * res_x / W)`` with cell corner ``c``
and offset ``f = p - c`` gets the bilinear blend, weighted by the fade ``6t^5 - 15t^4 + 10t^3``, of
the four dot products ``<g(c + d), f - d>`` for ``d in {0, 1}^2`` (Perlin 2002). Values lie in about
``[-0.71, 0.71]``. Any ``shape`` works (DRAEM's version needs ``H`` divisible by ``res``).
"""

from __future__ import annotations

import numpy as np


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Perlin noise, float32 ``[H, W]``, with ``res`` lattice cells along (y, x)."""
    height, width = shape
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(res[0] + 1, res[1] + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)  # [ry+1, rx+1, 2]
    py = np.arange(height) * (res[0] / height)
    px = np.arange(width) * (res[1] / width)
    cy, cx = py.astype(int), px.astype(int)
    fy, fx = py - cy, px - cx

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(cy + dy)[:, None], (cx + dx)[None, :]]  # [H, W, 2]
        return g[..., 0] * (fy - dy)[:, None] + g[..., 1] * (fx - dx)[None, :]

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (6.0 * t - 15.0) + 10.0)

    wy, wx = fade(fy)[:, None], fade(fx)[None, :]
    top = corner(0, 0) * (1 - wx) + corner(0, 1) * wx
    bottom = corner(1, 0) * (1 - wx) + corner(1, 1) * wx
    return (top * (1 - wy) + bottom * wy).astype(np.float32)


def fractal_noise(shape: tuple[int, int], res: int, octaves: int, rng: np.random.Generator,
                  persistence: float = 0.5) -> np.ndarray:
    """Sum of ``octaves`` Perlin layers (lattice ``res * 2^o``, amplitude ``persistence^o``), ``[H, W]``."""
    out = np.zeros(shape, np.float32)
    for octave in range(octaves):
        cells = res * 2**octave
        out += persistence**octave * perlin_noise(shape, (cells, cells), rng)
    return out
