"""A user's own data given by glob patterns (relative to ``root``; ``{category}`` is substituted).

``train_normal``, ``test_normal``, ``test_anomalous`` list images; ``masks`` lists masks, paired with
anomalous images by file stem (a trailing ``_mask`` on the mask stem is ignored). Without ``masks``
the set is image-level only (``mask_path`` ``""``). ``defect`` is the anomalous image's parent folder
name. ``categories`` defaults to the sub-folders of ``root`` when a pattern holds ``{category}``, else
to the single category ``root.name``. Errors: an anomalous image without a mask (when ``masks`` is
given), a mask without an image, two anomalous images or two masks with one stem, an empty category.

Example (``params.yaml``)::

    datasets:
      mine:
        reader: folder
        root: data/real/mine
        options: {train_normal: "{category}/ok/*.png", test_anomalous: "{category}/ng/*/*.png",
                  test_normal: "{category}/ok_test/*.png", masks: "{category}/masks/*.png"}
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import IMAGE_SUFFIXES, ROW_COLUMNS, check_name


def read_folder(root: Path, train_normal: str = "", test_normal: str = "", test_anomalous: str = "",
                masks: str = "", categories: list[str] | None = None) -> pd.DataFrame:
    patterns = [train_normal, test_normal, test_anomalous, masks]
    if not any(patterns[:3]):
        raise KeyError("folder reader: give at least one of train_normal, test_normal, test_anomalous")
    if categories is None:
        per_category = any("{category}" in p for p in patterns)
        categories = sorted(d.name for d in root.iterdir() if d.is_dir()) if per_category else [root.name]
    rows = []
    for category in categories:
        check_name(category, "category", f"folder reader, {root}")
        found = [(category, "train", 0, "good", str(p), "") for p in _glob(root, train_normal, category)]
        found += [(category, "test", 0, "good", str(p), "") for p in _glob(root, test_normal, category)]
        anomalous = _glob(root, test_anomalous, category)
        mask_of = _pair_masks(anomalous, _glob(root, masks, category), category) if masks else {}
        found += [(category, "test", 1, p.parent.name, str(p), str(mask_of.get(p, ""))) for p in anomalous]
        if not found:
            raise ValueError(f"empty category '{category}': no file matches the patterns under {root}")
        rows += found
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _glob(root: Path, pattern: str, category: str) -> list[Path]:
    if not pattern:
        return []
    return sorted(p for p in root.glob(pattern.format(category=category))
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _pair_masks(images: list[Path], masks: list[Path], category: str) -> dict[Path, Path]:
    by_stem: dict[str, Path] = {}
    for mask in masks:
        stem = mask.stem.removesuffix("_mask")
        if stem in by_stem:
            raise ValueError(f"category '{category}': masks {by_stem[stem]} and {mask} share the stem '{stem}'")
        by_stem[stem] = mask
    pairs: dict[Path, Path] = {}
    seen: dict[str, Path] = {}
    for image in images:
        if image.stem in seen:
            raise ValueError(f"category '{category}': anomalous images {seen[image.stem]} and {image} share the "
                             f"stem '{image.stem}', so masks cannot be paired by name")
        seen[image.stem] = image
        if image.stem not in by_stem:
            raise FileNotFoundError(f"anomalous image {image} has no mask (no mask named {image.stem}[_mask].*)")
        pairs[image] = by_stem[image.stem]
    orphans = sorted(set(by_stem) - set(seen))
    if orphans:
        raise ValueError(f"category '{category}': mask {by_stem[orphans[0]]} has no anomalous image")
    return pairs
