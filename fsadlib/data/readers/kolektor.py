"""Kolektor surface-defect sets in their official archives.

- ``ksdd`` (KolektorSDD, Tabernik et al. 2019; ``KolektorSDD.zip``): ``kos01 ... kos50/Part<n>.jpg`` with
  ``Part<n>_label.bmp``. Split rule of InCTRL's ``convert_SDD.py`` ("SDD"): every image is cut into
  three horizontal bands of height ``h // 3`` (the last takes the remainder); a band whose label has a
  non-zero pixel is anomalous (its label band is the mask), the others are normal and are split
  75/25 by ``train_test_split(test_size=0.25, random_state=42)`` in sorted (folder, part, band) order
  (InCTRL: ``os.listdir`` order). Bands are written under ``data/derived/ksdd/``. Category
  ``electrical_commutator``, defect ``defect``.
- ``ksdd2`` (KolektorSDD2, Bozic et al. 2021; ``KolektorSDD2.zip``): ``train/<id>.png`` + ``<id>_GT.png``
  and ``test/...``; an image is anomalous when its GT mask has a non-zero pixel. ``split="official"``:
  the normal images of ``train/`` train, every image of ``test/`` tests (the anomalous images of
  ``train/`` are left out). ``split="bayes_pfl"`` (default; Bayes-PFL's "KSDD2"): the anomalous
  images of both folders test, with as many normal ones (``balanced_split``, made deterministic;
  the authors' own random draw is their ``DATA_three.zip``, read with the ``bayes_pfl`` reader); the
  other normal images train. Category ``metal_surface``, defect ``defect``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS
from fsadlib.data.images import image_size
from fsadlib.data.readers.common import (
    balanced_split,
    cut_tiles,
    derived_dir,
    inctrl_split,
    read_array,
    require,
)

KSDD2_SPLITS = ("bayes_pfl", "official")


def read_ksdd(root: Path) -> pd.DataFrame:
    folders = sorted(d for d in root.iterdir() if d.is_dir() and d.name.startswith("kos"))
    if not folders:
        raise FileNotFoundError(f"{root}: no KolektorSDD folder kos01 ... kos50")
    out = derived_dir("ksdd", root)
    normal, anomalous = [], []
    for folder in folders:
        for image in sorted(folder.glob("Part*.jpg")):
            label = read_array(require(folder / f"{image.stem}_label.bmp", f"label of {image}"), grey=True)
            h, w = label.shape
            if image_size(image) != (w, h):
                raise ValueError(f"label {folder / image.stem}_label.bmp is {(w, h)} but its image {image} is "
                                 f"{image_size(image)} (width, height)")
            boxes = [(0, h // 3, 0, w), (h // 3, 2 * h // 3, 0, w), (2 * h // 3, h, 0, w)]
            for tile, mask, is_anomalous in cut_tiles(out, f"{folder.name}_{image.stem}", image, label, boxes):
                (anomalous.append((tile, mask)) if is_anomalous else normal.append(tile))
    train, test = inctrl_split(normal)
    category = "electrical_commutator"
    rows = [(category, "train", 0, "good", p, "") for p in train]
    rows += [(category, "test", 0, "good", p, "") for p in test]
    rows += [(category, "test", 1, "defect", p, m) for p, m in anomalous]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def read_ksdd2(root: Path, split: str = "bayes_pfl") -> pd.DataFrame:
    if split not in KSDD2_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(KSDD2_SPLITS)}")
    found = {}
    for part in ("train", "test"):
        images = sorted(p for p in require(root / part, "KolektorSDD2 folder").glob("*.png")
                        if not p.stem.endswith("_GT"))
        if not images:
            raise ValueError(f"no images in {root / part}")
        for image in images:
            mask = require(image.with_name(f"{image.stem}_GT.png"), f"mask of {image}")
            found[image] = (part, mask, bool(read_array(mask, grey=True).any()))
    category = "metal_surface"
    anomalous = [(str(p), str(m)) for p, (part, m, bad) in found.items()
                 if bad and (split == "bayes_pfl" or part == "test")]
    normal = sorted(p for p, (_, _, bad) in found.items() if not bad)
    if split == "official":
        train = [str(p) for p in normal if found[p][0] == "train"]
        test = [str(p) for p in normal if found[p][0] == "test"]
    else:
        train, test = (list(map(str, s)) for s in balanced_split(normal, len(anomalous)))
    rows = [(category, "train", 0, "good", p, "") for p in train]
    rows += [(category, "test", 0, "good", p, "") for p in test]
    rows += [(category, "test", 1, "defect", p, m) for p, m in anomalous]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
