"""The ``meta.json`` schema of AnomalyCLIP / APRIL-GAN (and Bayes-PFL): read and write.

``{"train": {<class>: [entry, ...]}, "test": {...}}``, ``entry = {"img_path", "mask_path", "cls_name",
"specie_name", "anomaly"}`` (+ ``"dataset_name"`` in Bayes-PFL, ignored). Paths are relative to the
folder holding ``meta.json`` (the data-set root). ``mask_path`` ``""`` (or a folder, AnomalyCLIP's
convention for classification-only sets) means no mask. ``specie_name`` becomes ``defect``;
an empty one becomes ``good`` / ``anomaly`` from the label.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, check_name, resolve_path
from fsadlib.io import read_json, write_json

ENTRY_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


def read_meta_json(root: Path, meta: str = "meta.json") -> pd.DataFrame:
    path = root / meta
    content = read_json(path)
    unknown = sorted(set(content) - {"train", "test"})
    if unknown:
        raise KeyError(f"{path}: unknown top-level keys {unknown}; expected 'train' and/or 'test'")
    rows = []
    for split, classes in content.items():
        for cls, entries in classes.items():
            check_name(cls, "category", f"meta_json reader, {path} [{split}]")
            if not entries:
                raise ValueError(f"{path}: empty category '{cls}' in split '{split}'")
            for i, entry in enumerate(entries):
                where = f"{path} [{split}][{cls}][{i}]"
                missing = [k for k in ENTRY_KEYS if k not in entry]
                if missing:
                    raise KeyError(f"{where}: missing keys {missing}")
                if entry["cls_name"] != cls:
                    raise ValueError(f"{where}: cls_name '{entry['cls_name']}' under class key '{cls}'")
                image = root / entry["img_path"]
                if not image.is_file():
                    raise FileNotFoundError(f"{where}: image not found: {image}")
                label = int(entry["anomaly"])
                mask = root / entry["mask_path"] if entry["mask_path"] else None
                if mask is not None and not mask.is_dir() and not mask.is_file():
                    raise FileNotFoundError(f"{where}: mask not found: {mask}")
                mask_path = str(mask) if mask is not None and mask.is_file() else ""
                defect = entry["specie_name"] or ("anomaly" if label else "good")
                rows.append((cls, split, label, defect, str(image), mask_path))
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def write_meta_json(samples: pd.DataFrame, root: str | Path, meta: str = "meta.json", outside: bool = False,
                    dataset_name: str | None = None) -> Path:
    """Write ``samples`` as ``<root>/<meta>`` with paths relative to ``root`` (atomic).

    Every image and mask must lie under ``root`` (``ValueError`` naming the first that does not), unless
    ``outside``: then a path outside is written relative with ``..`` parts (``os.path.join(root, img_path)``,
    as AnomalyCLIP / Bayes-PFL load it, still finds it). ``dataset_name`` adds Bayes-PFL's key.
    """
    root = Path(root).resolve()
    content: dict[str, dict[str, list[dict]]] = {}
    for row in samples.itertuples(index=False):
        entry = {
            "img_path": _relative(row.image_path, root, outside),
            "mask_path": _relative(row.mask_path, root, outside) if row.mask_path else "",
            "cls_name": row.category,
            "specie_name": row.defect,
            "anomaly": int(row.label),
        } | ({"dataset_name": dataset_name} if dataset_name else {})
        content.setdefault(row.split, {}).setdefault(row.category, []).append(entry)
    return write_json(root / meta, content)


def _relative(path: str, root: Path, outside: bool) -> str:
    resolved = resolve_path(path).resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix()
    if not outside:
        raise ValueError(f"{resolved} is not under the meta.json root {root}")
    return Path(os.path.relpath(resolved, root)).as_posix()
