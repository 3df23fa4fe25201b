"""VisA with its official split file ``split_csv/1cls.csv`` (columns ``object, split, label, image, mask``).

Paths in the CSV are relative to ``root``; ``label`` is ``normal`` or ``anomaly``. VisA gives no
defect type, so ``defect`` is ``good`` or ``anomaly``. An anomalous row needs a mask whose file stem
equals the image's (``.../Images/Anomaly/000.JPG`` <-> ``.../Masks/Anomaly/000.png``). VisA masks
mark defects with non-zero values (not always 255); :mod:`fsadlib.data.dataset` reads any non-zero
value as anomalous.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, check_name

VISA_COLUMNS = ("object", "split", "label", "image", "mask")
_LABELS = {"normal": 0, "anomaly": 1}


def read_visa(root: Path, split_csv: str = "split_csv/1cls.csv") -> pd.DataFrame:
    csv = root / split_csv
    if not csv.is_file():
        raise FileNotFoundError(f"VisA split file not found: {csv}")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    missing = [c for c in VISA_COLUMNS if c not in table.columns]
    if missing:
        raise KeyError(f"{csv}: missing columns {missing}; expected {list(VISA_COLUMNS)}")
    rows = []
    for line, rec in enumerate(table.itertuples(index=False), start=2):
        where = f"{csv}, line {line}"
        check_name(rec.object, "category", f"visa reader, {where}, column 'object'")
        if rec.label not in _LABELS or rec.split not in ("train", "test"):
            raise ValueError(f"{where}: label must be normal/anomaly and split train/test, "
                             f"got label={rec.label!r} split={rec.split!r}")
        image = root / rec.image
        if not image.is_file():
            raise FileNotFoundError(f"{where}: image not found: {image}")
        label = _LABELS[rec.label]
        mask = ""
        if label:
            if not rec.mask:
                raise FileNotFoundError(f"{where}: anomalous image {image} has no mask")
            mask_path = root / rec.mask
            if not mask_path.is_file():
                raise FileNotFoundError(f"{where}: mask not found: {mask_path} (image {image})")
            if mask_path.stem != image.stem:
                raise ValueError(f"{where}: mask {mask_path} does not match image {image} by file name")
            mask = str(mask_path)
        rows.append((rec.object, rec.split, label, "anomaly" if label else "good", str(image), mask))
    if not rows:
        raise ValueError(f"{csv}: no rows")
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
