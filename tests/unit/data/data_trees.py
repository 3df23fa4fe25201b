"""Helpers that write tiny images and masks for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)
    return path


def rgb(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size, 3), value, np.uint8)


def mask_with(pixels: int, size: int = 8) -> np.ndarray:
    """A 0/255 mask whose first ``pixels`` pixels (row-major) are set: its area identifies it."""
    mask = np.zeros(size * size, np.uint8)
    mask[:pixels] = 255
    return mask.reshape(size, size)
