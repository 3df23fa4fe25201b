"""Pieces the readers share: the papers' normal split, derived (cropped / decoded) files, row building.

**The InCTRL split** (:func:`inctrl_split`): ``sklearn.model_selection.train_test_split(items,
test_size=0.25, random_state=42)``, the call of InCTRL's ``convert_*.py`` scripts: with ``n`` items,
``n_test = ceil(0.25 n)``, ``perm = RandomState(42).permutation(n)``, test = ``items[perm[:n_test]]``,
train = ``items[perm[n_test:]]``. The public scripts feed it ``os.listdir`` order (file-system
dependent, so irreproducible); the readers feed it a documented order (the label file's order, else
sorted names), which makes the split deterministic.

**Derived files**: where a paper cuts images into tiles (KolektorSDD thirds, AITEX 256 px tiles,
RSDD squares), decodes arrays (MNIST, CIFAR-10) or binarises JPEG masks, the reader writes the pieces
once, atomically, under ``data/derived/<reader>/<hash of the root path>/`` and lists those files. A
piece's name carries a fingerprint of its source file (size and modification time), so an edited
source gets a new piece and an unchanged one is reused: reading twice writes nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image

from fsadlib.io import atomic_path
from fsadlib.paths import data_dir

T = TypeVar("T")

INCTRL_SPLIT = "normal images split 75/25 (train/test) by sklearn train_test_split(test_size=0.25, random_state=42)"


def inctrl_split(items: Sequence[T], test_size: float = 0.25, seed: int = 42) -> tuple[list[T], list[T]]:
    """``(train, test)`` as InCTRL's ``train_test_split(items, test_size=0.25, random_state=42)``."""
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    n = len(items)
    if n < 2:
        raise ValueError(f"cannot split {n} normal image(s) into train and test")
    n_test = math.ceil(test_size * n)
    perm = np.random.RandomState(seed).permutation(n)
    return [items[i] for i in perm[n_test:]], [items[i] for i in perm[:n_test]]


def derived_dir(reader: str, root: Path) -> Path:
    """``data/derived/<reader>/<sha1(resolved root)[:12]>``: where a reader writes pieces of ``root``."""
    digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    return data_dir() / "derived" / reader / digest


def derived_file(folder: Path, name: str, *sources: Path) -> Path:
    """``<folder>/<name>.<fingerprint of the sources>.png``: the path of a piece made from ``sources``."""
    stats = [p.stat() for p in sources]
    fingerprint = hashlib.sha1(";".join(f"{s.st_size}-{s.st_mtime_ns}" for s in stats).encode()).hexdigest()[:8]
    return folder / f"{name}.{fingerprint}.png"


def save_png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (uint8 ``[H, W]`` or ``[H, W, 3]``) as a PNG atomically, unless it already exists."""
    if not path.is_file():
        with atomic_path(path, suffix=".png") as tmp:
            Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    return path


def read_array(path: Path, grey: bool = False) -> np.ndarray:
    """Pixels of an image file (``grey``: as one channel); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L") if grey else img)
    except OSError as err:
        raise ValueError(f"unreadable image {path}: {err}") from err


def binary_mask(array: np.ndarray, threshold: int = 128) -> np.ndarray:
    """0/255 uint8 mask: ``value > threshold`` (the public converters' rule for 0/255 and JPEG masks)."""
    return ((array > threshold) * 255).astype(np.uint8)


def require(path: Path, what: str) -> Path:
    """``path`` if it exists, else ``FileNotFoundError`` naming it and what it should be."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


BALANCED_SPLIT = ("every anomalous image in test with as many normal images, drawn by "
                  "RandomState(42).permutation over the sorted normals; the other normals in train")


def balanced_split(normals: Sequence[T], n_anomalous: int, seed: int = 42) -> tuple[list[T], list[T]]:
    """``(train, test)`` normals: ``min(n_anomalous, len - 1)`` of them, the first of
    ``RandomState(seed).permutation``, go to test (the deterministic form of Bayes-PFL's / AdaCLIP's
    "sample as many normal test images as anomalous ones"); at least one stays in train."""
    if len(normals) < 2:
        raise ValueError(f"cannot split {len(normals)} normal image(s) into train and test")
    n_test = min(n_anomalous, len(normals) - 1)
    perm = np.random.RandomState(seed).permutation(len(normals))
    return [normals[i] for i in sorted(perm[n_test:])], [normals[i] for i in sorted(perm[:n_test])]


def cut_tiles(out: Path, name: str, image: Path, label: np.ndarray | None,
              boxes: Sequence[tuple[int, int, int, int]]) -> list[tuple[str, str, int]]:
    """Cut ``image`` (and its ``label`` array, when given) into ``boxes`` ``(top, bottom, left, right)``;
    a tile is anomalous when its label crop has a non-zero pixel. Writes each tile
    ``<name>_<i>`` (and each anomalous tile's 0/255 mask ``<name>_<i>_mask``) under ``out`` once and
    returns ``(tile path, mask path or "", label)`` per box."""
    pixels: np.ndarray | None = None
    tiles = []
    for i, (top, bottom, left, right) in enumerate(boxes):
        crop = label[top:bottom, left:right] if label is not None else None
        anomalous = crop is not None and bool(crop.any())
        target = derived_file(out, f"{name}_{i}", image)
        if not target.is_file():
            pixels = read_array(image) if pixels is None else pixels
            save_png(target, pixels[top:bottom, left:right])
        mask = save_png(derived_file(out, f"{name}_{i}_mask", image), ((crop > 0) * 255).astype(np.uint8)) \
            if anomalous else ""
        tiles.append((str(target), str(mask), int(anomalous)))
    return tiles
