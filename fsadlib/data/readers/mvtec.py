"""MVTec AD layout: ``<root>/<category>/{train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.*}``.

A category is a sub-folder of ``root`` holding ``train/`` or ``test/``. ``test/good`` images are
normal; an image ``test/<defect>/<stem>.*`` pairs with ``ground_truth/<defect>/<stem>_mask.*``.
Errors: a defective image without its mask, a mask without its image, an empty category.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, check_name, list_images


def read_mvtec(root: Path) -> pd.DataFrame:
    categories = sorted(d for d in root.iterdir() if d.is_dir() and ((d / "train").is_dir() or (d / "test").is_dir()))
    if not categories:
        raise FileNotFoundError(f"{root}: no MVTec-style category folder (<category>/train/good or <category>/test)")
    rows = []
    for folder in categories:
        category = check_name(folder.name, "category", f"mvtec reader, {folder}")
        rows += [(category, "train", 0, "good", str(p), "") for p in list_images(folder / "train" / "good")]
        defects = sorted(d for d in (folder / "test").iterdir() if d.is_dir()) if (folder / "test").is_dir() else []
        for defect_dir in defects:
            defect = defect_dir.name
            for image in list_images(defect_dir):
                mask = "" if defect == "good" else str(_mask_of(image, folder / "ground_truth" / defect))
                rows.append((category, "test", int(defect != "good"), defect, str(image), mask))
        _check_no_orphan_masks(folder)
        if not any(r[0] == category for r in rows):
            raise ValueError(f"empty category {folder}: no images under train/good or test/*")
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _mask_of(image: Path, mask_dir: Path) -> Path:
    found = [p for p in list_images(mask_dir) if p.stem == f"{image.stem}_mask"]
    if not found:
        raise FileNotFoundError(f"anomalous image {image} has no mask: expected {mask_dir / (image.stem + '_mask.png')}")
    if len(found) > 1:
        raise ValueError(f"anomalous image {image} has several masks: {[str(p) for p in found]}")
    return found[0]


def _check_no_orphan_masks(folder: Path) -> None:
    """A mask whose image is missing means the tree is damaged (or pairs were renamed)."""
    gt = folder / "ground_truth"
    for mask_dir in sorted(d for d in gt.iterdir() if d.is_dir()) if gt.is_dir() else []:
        stems = {p.stem for p in list_images(folder / "test" / mask_dir.name)}
        for mask in list_images(mask_dir):
            if mask.stem.removesuffix("_mask") not in stems:
                raise ValueError(f"mask {mask} has no image test/{mask_dir.name}/"
                                 f"{mask.stem.removesuffix('_mask')}.* in {folder}")
