"""Medical image-level data sets (no masks): HeadCT, BrainMRI, Br35H, in their Kaggle downloads.

- ``headct`` (Kaggle "Head CT - hemorrhage", Kitamura 2018): ``labels.csv`` (header ``id,hemorrhage``;
  rows ``<id>,<0|1>``) and images ``head_ct/<id:03d>.png`` (the Kaggle zip nests them once more,
  ``head_ct/head_ct/``: both are found). Category ``head_ct``.
- ``brainmri`` (Kaggle "Brain MRI Images for Brain Tumor Detection", Chakrabarty 2019): folders
  ``no/`` (normal) and ``yes/`` (tumour), possibly inside ``brain_tumor_dataset/``. Category ``brain``.
- ``br35h`` (Kaggle "Br35H :: Brain Tumor Detection 2020", Hamada 2020): folders ``no/`` and ``yes/``
  (``pred/``, unlabelled, is ignored). Category ``brain``.

``split`` chooses the paper protocol: ``inctrl`` (InCTRL's ``convert_HeadCT.py`` /
``convert_BrainMRI.py``: normals 75/25 into train/test by ``train_test_split(test_size=0.25,
random_state=42)``, in ``labels.csv`` order for HeadCT and sorted file names for the folders, where
InCTRL used ``os.listdir`` order; every anomalous image in test) or ``test_only`` (AdaCLIP /
AnomalyCLIP / Bayes-PFL zero-shot: every image in test). Defect ``hemorrhage`` / ``tumor``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, list_images
from fsadlib.data.readers.common import inctrl_split, require

SPLITS = ("inctrl", "test_only")


def read_headct(root: Path, split: str = "inctrl") -> pd.DataFrame:
    labels = require(root / "labels.csv", "HeadCT label file")
    table = pd.read_csv(labels, skipinitialspace=True, dtype=str, keep_default_na=False)
    table.columns = [c.strip() for c in table.columns]
    if list(table.columns) != ["id", "hemorrhage"]:
        raise KeyError(f"{labels}: expected the columns ['id', 'hemorrhage'], got {list(table.columns)}")
    folder = root / "head_ct" / "head_ct" if (root / "head_ct" / "head_ct").is_dir() else root / "head_ct"
    normal, anomalous = [], []
    for line, (image_id, label) in enumerate(table.itertuples(index=False), start=2):
        if not image_id.isdigit() or label not in ("0", "1"):
            raise ValueError(f"{labels}, line {line}: expected '<integer id>,<0|1>', got {image_id!r},{label!r}")
        image = require(folder / f"{int(image_id):03d}.png", f"{labels}, line {line}: image")
        (anomalous if label == "1" else normal).append(image)
    return _rows("head_ct", normal, anomalous, "hemorrhage", split)


def read_brainmri(root: Path, split: str = "inctrl") -> pd.DataFrame:
    base = root / "brain_tumor_dataset" if (root / "brain_tumor_dataset").is_dir() else root
    return _rows("brain", _folder(base / "no"), _folder(base / "yes"), "tumor", split)


def read_br35h(root: Path, split: str = "test_only") -> pd.DataFrame:
    return _rows("brain", _folder(root / "no"), _folder(root / "yes"), "tumor", split)


def _folder(path: Path) -> list[Path]:
    images = list_images(require(path, "image folder"))
    if not images:
        raise ValueError(f"no images in {path}")
    return images


def _rows(category: str, normal: list[Path], anomalous: list[Path], defect: str, split: str) -> pd.DataFrame:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    train, test = inctrl_split(normal) if split == "inctrl" else ([], normal)
    rows = [(category, "train", 0, "good", str(p), "") for p in train]
    rows += [(category, "test", 0, "good", str(p), "") for p in test]
    rows += [(category, "test", 1, defect, str(p), "") for p in anomalous]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
