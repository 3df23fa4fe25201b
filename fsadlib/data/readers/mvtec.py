"""MVTec-AD-shaped trees: ``<root>/<category>/{train/<good>, test/<defect>, ground_truth/<defect>/<stem><suffix>.*}``.

A category is a sub-folder of ``root`` holding ``train/`` or ``test/``. ``test/<good>`` images are
normal; an image ``test/<defect>/<stem>.*`` pairs with ``ground_truth/<defect>/<stem><mask_suffix>.*``
by file name (any image suffix: BTAD pairs ``.bmp`` images with ``.png`` masks).
Errors: a defective image without its mask, a mask without its image, an empty category.

Data sets distributed in this layout (the official archives, unpacked):

- ``mvtec``: MVTec AD (``good``, masks ``<stem>_mask.png``).
- ``mpdd``: MPDD (Jezek et al. 2021; the same layout and mask names as MVTec AD).
- ``btad``: BTAD / ``BTech_Dataset_transformed`` (categories ``01 02 03``, normal folder ``ok``,
  defect folder ``ko``, masks ``ground_truth/ko/<stem>.png`` or ``.bmp``: no suffix).
- ``dtd_synthetic``: DTD-Synthetic (Aota et al. 2023; 12 textures, ``test/bad``, masks
  ``ground_truth/bad/<stem>.png``; ``<stem>_mask.png`` is accepted too).
- ``bayes_pfl``: a data set of the Bayes-PFL authors' standardised copy (``DATA_three.zip``, the frozen
  KSDD2 / RSDD / DAGM splits; also what their ``make_dataset.py`` writes): ``test/anomaly`` images
  ``*.bmp`` with masks ``ground_truth/anomaly/<stem>.png``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, check_name, list_images


def read_mvtec_layout(root: Path, good: str = "good", mask_suffix: str | tuple[str, ...] = "_mask") -> pd.DataFrame:
    """Rows of an MVTec-shaped tree whose normal folders are named ``good`` and whose masks are
    ``<image stem><mask_suffix>.*`` (one of the suffixes, when a tuple; see the module docstring)."""
    categories = sorted(d for d in root.iterdir() if d.is_dir() and ((d / "train").is_dir() or (d / "test").is_dir()))
    if not categories:
        raise FileNotFoundError(f"{root}: no MVTec-style category folder (<category>/train/{good} or <category>/test)")
    rows = []
    for folder in categories:
        category = check_name(folder.name, "category", f"mvtec reader, {folder}")
        rows += [(category, "train", 0, "good", str(p), "") for p in list_images(folder / "train" / good)]
        defects = sorted(d for d in (folder / "test").iterdir() if d.is_dir()) if (folder / "test").is_dir() else []
        for defect_dir in defects:
            defect = "good" if defect_dir.name == good else defect_dir.name
            for image in list_images(defect_dir):
                mask = "" if defect == "good" else str(_mask_of(image, folder / "ground_truth" / defect, mask_suffix))
                rows.append((category, "test", int(defect != "good"), defect, str(image), mask))
        _check_no_orphan_masks(folder, mask_suffix)
        if not any(r[0] == category for r in rows):
            raise ValueError(f"empty category {folder}: no images under train/{good} or test/*")
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def read_mvtec(root: Path) -> pd.DataFrame:
    return read_mvtec_layout(root)


def read_mpdd(root: Path) -> pd.DataFrame:
    return read_mvtec_layout(root)


def read_btad(root: Path) -> pd.DataFrame:
    return read_mvtec_layout(root, good="ok", mask_suffix="")


def read_dtd_synthetic(root: Path) -> pd.DataFrame:
    return read_mvtec_layout(root, mask_suffix=("", "_mask"))


def read_bayes_pfl(root: Path) -> pd.DataFrame:
    return read_mvtec_layout(root, mask_suffix="")


def _mask_of(image: Path, mask_dir: Path, mask_suffix: str | tuple[str, ...]) -> Path:
    suffixes = (mask_suffix,) if isinstance(mask_suffix, str) else mask_suffix
    found = [p for p in list_images(mask_dir) if p.stem in {image.stem + s for s in suffixes}]
    if not found:
        raise FileNotFoundError(f"anomalous image {image} has no mask: expected "
                                f"{mask_dir / (image.stem + suffixes[0] + '.png')}")
    if len(found) > 1:
        raise ValueError(f"anomalous image {image} has several masks: {[str(p) for p in found]}")
    return found[0]


def _check_no_orphan_masks(folder: Path, mask_suffix: str | tuple[str, ...]) -> None:
    """A mask whose image is missing means the tree is damaged (or pairs were renamed)."""
    suffixes = (mask_suffix,) if isinstance(mask_suffix, str) else mask_suffix
    gt = folder / "ground_truth"
    for mask_dir in sorted(d for d in gt.iterdir() if d.is_dir()) if gt.is_dir() else []:
        stems = {p.stem for p in list_images(folder / "test" / mask_dir.name)}
        for mask in list_images(mask_dir):
            candidates = [mask.stem.removesuffix(s) for s in suffixes if s and mask.stem.endswith(s)]
            candidates += [mask.stem] if "" in suffixes else []
            if not stems & set(candidates):
                raise ValueError(f"mask {mask} has no image test/{mask_dir.name}/{candidates[0] if candidates else mask.stem}.* "
                                 f"in {folder}")
