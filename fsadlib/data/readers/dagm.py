"""DAGM 2007 (Wieler & Hahn; the "Weakly Supervised Learning for Industrial Optical Inspection"
archive unpacked): ``Class<n>/{Train,Test}/<nnnn>.PNG`` with ``Class<n>/{Train,Test}/Label/<nnnn>_label.PNG``
for the defective ones (the official labels are ellipses around each defect). Category = the class
folder (``Class1`` ... ``Class10``), defect ``defect``.

``split="bayes_pfl"`` (default; Bayes-PFL / AdaCLIP's DAGM): Train and Test pooled per class, every
defective image tests with as many normal ones (``balanced_split``, the deterministic form of their
sampling); the other normal images train. ``split="official"``: the normal images of ``Train`` train,
everything in ``Test`` tests. ``classes`` keeps only those class numbers (Bayes-PFL uses
``[1, 2, 3, 4, 5, 7, 8]``). The authors' re-annotated precise masks come with their ``DATA_three.zip``:
read it with the ``bayes_pfl`` reader.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS
from fsadlib.data.readers.common import balanced_split, require

SPLITS = ("bayes_pfl", "official")


def read_dagm(root: Path, split: str = "bayes_pfl", classes: list[int] | None = None) -> pd.DataFrame:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    folders = sorted((d for d in root.iterdir() if d.is_dir() and d.name.startswith("Class")),
                     key=lambda d: int(d.name[5:]) if d.name[5:].isdigit() else -1)
    if classes is not None:
        missing = [c for c in classes if not (root / f"Class{c}").is_dir()]
        if missing:
            raise FileNotFoundError(f"{root}: no folder for DAGM classes {missing}")
        folders = [root / f"Class{c}" for c in classes]
    if not folders:
        raise FileNotFoundError(f"{root}: no DAGM folder Class1 ... Class10")
    rows = []
    for folder in folders:
        found = {part: _images(require(folder / part, "DAGM folder")) for part in ("Train", "Test")}
        anomalous = [(str(p), str(m)) for part in found for p, m in found[part]
                     if m and (split == "bayes_pfl" or part == "Test")]
        if split == "official":
            train = [str(p) for p, m in found["Train"] if not m]
            test = [str(p) for p, m in found["Test"] if not m]
        else:
            normal = [str(p) for part in found for p, m in found[part] if not m]
            train, test = balanced_split(normal, len(anomalous))
        rows += [(folder.name, "train", 0, "good", p, "") for p in train]
        rows += [(folder.name, "test", 0, "good", p, "") for p in test]
        rows += [(folder.name, "test", 1, "defect", p, m) for p, m in anomalous]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _images(folder: Path) -> list[tuple[Path, Path | None]]:
    """``(image, label or None)`` of a Train/Test folder, by name; a label without image is an error."""
    images = sorted(p for p in folder.glob("*.PNG"))
    if not images:
        raise ValueError(f"no *.PNG images in {folder}")
    labels = {p.name.removesuffix("_label.PNG"): p for p in (folder / "Label").glob("*_label.PNG")}
    pairs = [(p, labels.pop(p.stem, None)) for p in images]
    if labels:
        raise ValueError(f"label {next(iter(labels.values()))} has no image in {folder}")
    return pairs
