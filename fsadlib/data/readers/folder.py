"""A user's own data given by glob patterns (relative to ``root``; ``{category}`` is substituted).

Roles: ``train_normal``, ``test_normal``, ``test_anomalous`` list images; ``normal`` lists normal images
to be split into train and test deterministically (``test_ratio`` of them, ``ceil(test_ratio n)``, go
to test: ``RandomState(split_seed).permutation`` over the sorted paths, i.e. sklearn's
``train_test_split(test_size=test_ratio, random_state=split_seed)``; the data card records the ratio and
seed); ``masks`` lists masks. Each role takes one pattern or a list of patterns (their matches are
united); ``exclude`` (pattern or list) removes matching files from every role. A mask pairs with the
anomalous image whose file stem equals the mask's stem without ``mask_suffix`` (default ``_mask``;
``""`` pairs ``ng/001.png`` with ``ng/001.jpg``), so masks may lie beside their images: a file matched
by ``masks`` is never an image of another role. Without ``masks`` the set is image-level only
(``mask_path`` ``""``). ``defect`` is the anomalous image's parent folder name. ``categories``
defaults to the sub-folders of ``root`` when a pattern holds ``{category}``, else to the single
category ``root.name``. Errors: an anomalous image without a mask (when ``masks`` is given), a mask
without an image, two anomalous images or two masks with one stem, one file in two roles, an empty
category, a ``test_ratio`` outside (0, 1).

Example (``params.yaml``): one folder of good images split 80/20, defects in sub-folders with their
masks beside them as PNG::

    datasets:
      mine:
        reader: folder
        root: data/real/mine
        options: {normal: "{category}/good/*.jpg", test_ratio: 0.2, split_seed: 0,
                  test_anomalous: "{category}/defects/*/*.jpg", masks: "{category}/defects/*/*.png",
                  mask_suffix: "", exclude: ["**/thumbs/*"]}
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import IMAGE_SUFFIXES, ROW_COLUMNS, check_name
from fsadlib.data.readers.common import inctrl_split

Patterns = str | list[str]


def read_folder(root: Path, train_normal: Patterns = "", test_normal: Patterns = "", test_anomalous: Patterns = "",
                masks: Patterns = "", normal: Patterns = "", test_ratio: float = 0.25, split_seed: int = 42,
                exclude: Patterns = "", mask_suffix: str = "_mask", categories: list[str] | None = None
                ) -> pd.DataFrame:
    roles = {"train_normal": _as_list(train_normal), "test_normal": _as_list(test_normal),
             "test_anomalous": _as_list(test_anomalous), "normal": _as_list(normal)}
    mask_patterns, excluded = _as_list(masks), _as_list(exclude)
    if not any(roles.values()):
        raise KeyError("folder reader: give at least one of train_normal, test_normal, test_anomalous, normal")
    if not 0 < test_ratio < 1:
        raise ValueError(f"folder reader: test_ratio must be in (0, 1), got {test_ratio}")
    if categories is None:
        every = [p for patterns in [*roles.values(), mask_patterns] for p in patterns]
        per_category = any("{category}" in p for p in every)
        categories = sorted(d.name for d in root.iterdir() if d.is_dir()) if per_category else [root.name]
    rows = []
    for category in categories:
        check_name(category, "category", f"folder reader, {root}")
        skip = _glob(root, excluded, category)
        mask_files = _glob(root, mask_patterns, category) - skip
        found = {role: sorted(_glob(root, patterns, category) - skip - mask_files) for role, patterns in roles.items()}
        _check_disjoint(found, category)
        train, test = inctrl_split(found["normal"], test_ratio, split_seed) if found["normal"] else ([], [])
        category_rows = [(category, "train", 0, "good", str(p), "") for p in sorted(found["train_normal"] + train)]
        category_rows += [(category, "test", 0, "good", str(p), "") for p in sorted(found["test_normal"] + test)]
        anomalous = found["test_anomalous"]
        mask_of = _pair_masks(anomalous, sorted(mask_files), mask_suffix, category) if mask_patterns else {}
        category_rows += [(category, "test", 1, p.parent.name, str(p), str(mask_of.get(p, ""))) for p in anomalous]
        if not category_rows:
            raise ValueError(f"empty category '{category}': no file matches the patterns under {root}")
        rows += category_rows
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _as_list(patterns: Patterns) -> list[str]:
    if isinstance(patterns, str):
        return [patterns] if patterns else []
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"folder reader: a pattern must be a string or a list of strings, got {patterns!r}")
    return [p for p in patterns if p]


def _glob(root: Path, patterns: list[str], category: str) -> set[Path]:
    return {p for pattern in patterns for p in root.glob(pattern.format(category=category))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def _check_disjoint(found: dict[str, list[Path]], category: str) -> None:
    seen: dict[Path, str] = {}
    for role, paths in found.items():
        for path in paths:
            if path in seen:
                raise ValueError(f"category '{category}': {path} matches both '{seen[path]}' and '{role}'")
            seen[path] = role


def _pair_masks(images: list[Path], masks: list[Path], mask_suffix: str, category: str) -> dict[Path, Path]:
    by_stem: dict[str, Path] = {}
    for mask in masks:
        stem = mask.stem.removesuffix(mask_suffix) if mask_suffix else mask.stem
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
            raise FileNotFoundError(f"anomalous image {image} has no mask (no mask named "
                                    f"{image.stem}{mask_suffix}.*)")
        pairs[image] = by_stem[image.stem]
    orphans = sorted(set(by_stem) - set(seen))
    if orphans:
        raise ValueError(f"category '{category}': mask {by_stem[orphans[0]]} has no anomalous image")
    return pairs
