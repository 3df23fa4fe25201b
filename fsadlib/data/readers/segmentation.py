"""Medical segmentation sets (every test image anomalous, pixel metrics only), official layouts.

- ``isic``: ISIC 2016 challenge, part 1 test set (379 dermoscopy images, used by AdaCLIP /
  AnomalyCLIP / Bayes-PFL): ``ISBI2016_ISIC_Part1_Test_Data/<id>.jpg`` with
  ``ISBI2016_ISIC_Part1_Test_GroundTruth/<id>_Segmentation.png``. Category ``skin``, defect ``lesion``.
- ``clinicdb``: CVC-ClinicDB (612 colonoscopy frames): ``Original/<n>.tif`` with ``Ground Truth/<n>.tif``
  (the Kaggle copy also has ``PNG/Original`` / ``PNG/Ground Truth`` and ``TIF/...``; the first found of
  ``.``, ``PNG``, ``TIF`` is used). Category ``colon``, defect ``polyp``.
- ``colondb``: CVC-ColonDB (380 frames) as distributed with the polyp-segmentation test sets
  (``images/<n>.png`` with ``masks/<n>.png``). Category ``colon``, defect ``polyp``.
- ``kvasir``: Kvasir-SEG (1,000 images): ``images/<id>.jpg`` with ``masks/<id>.jpg``. ``colon`` / ``polyp``.
- ``endo``: EndoTect 2020 segmentation test set (200 images): ``images/<id>.jpg`` with
  ``masks/<id>.jpg``. ``colon`` / ``polyp``.

Masks pair with images by file stem (never by sorted position, as AnomalyCLIP's generators do).
Every mask is binarised by ``value > 128`` (the public converters' rule; the JPEG masks of Kvasir and
Endo carry compression noise that the workbench's non-zero mask rule would count as lesion) and
written once as a 0/255 PNG under ``data/derived/<reader>/`` (:mod:`.common`). There are no normal
images: the image-level metrics are not applicable (:mod:`fsadlib.evaluate`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, list_images
from fsadlib.data.readers.common import binary_mask, derived_dir, derived_file, read_array, require, save_png


def read_isic(root: Path) -> pd.DataFrame:
    return _pairs("isic", root, root / "ISBI2016_ISIC_Part1_Test_Data", root / "ISBI2016_ISIC_Part1_Test_GroundTruth",
                  "_Segmentation", "skin", "lesion")


def read_clinicdb(root: Path) -> pd.DataFrame:
    base = next((root / sub for sub in (".", "PNG", "TIF") if (root / sub / "Original").is_dir()), root)
    return _pairs("clinicdb", root, base / "Original", base / "Ground Truth", "", "colon", "polyp")


def read_colondb(root: Path) -> pd.DataFrame:
    return _pairs("colondb", root, root / "images", root / "masks", "", "colon", "polyp")


def read_kvasir(root: Path) -> pd.DataFrame:
    return _pairs("kvasir", root, root / "images", root / "masks", "", "colon", "polyp")


def read_endo(root: Path) -> pd.DataFrame:
    return _pairs("endo", root, root / "images", root / "masks", "", "colon", "polyp")


def _pairs(reader: str, root: Path, image_dir: Path, mask_dir: Path, mask_suffix: str, category: str,
           defect: str) -> pd.DataFrame:
    images = list_images(require(image_dir, "image folder"))
    masks = {p.stem: p for p in list_images(require(mask_dir, "mask folder"))}
    if not images:
        raise ValueError(f"no images in {image_dir}")
    out = derived_dir(reader, root)
    rows = []
    for image in images:
        mask = masks.pop(image.stem + mask_suffix, None)
        if mask is None:
            raise FileNotFoundError(f"image {image} has no mask {mask_dir / (image.stem + mask_suffix)}.*")
        target = derived_file(out, f"{image.stem}_mask", mask)
        if not target.is_file():
            save_png(target, binary_mask(read_array(mask, grey=True)))
        rows.append((category, "test", 1, defect, str(image), str(target)))
    if masks:
        raise ValueError(f"mask {next(iter(masks.values()))} has no image in {image_dir}")
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
