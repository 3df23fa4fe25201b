"""ELPV (Deitsch et al. 2019; ``github.com/zae-bayern/elpv-dataset``, also the ``elpv-dataset`` PyPI
package's ``elpv_dataset/data`` folder): ``<root>/labels.csv`` + ``<root>/images/cell*.png``.

``labels.csv`` has no header; each line is ``<image path> <defect probability> <mono|poly>``,
separated by whitespace (``images/cell0001.png  1.0  mono``). Split rule of InCTRL's
``convert_elpv.py``: probability 0 is normal, split 75/25 into train/test by
``train_test_split(test_size=0.25, random_state=42)`` in ``labels.csv`` order; probability 1 is
anomalous (test only, ``defect`` = the cell type ``mono`` / ``poly``); the intermediate probabilities
(1/3, 2/3) are dropped. Image-level only: ``mask_path`` is ``""``.

``limit`` (0 = all) keeps the first ``limit`` images, in ``labels.csv`` order, of each of train
normal, test normal and test anomalous *after* the split, so a kept image has the split it has in the
full set (for cheap tests and previews; results on a limited set are not the paper's).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS
from fsadlib.data.readers.common import inctrl_split, require

CELL_TYPES = ("mono", "poly")


def read_elpv(root: Path, limit: int = 0) -> pd.DataFrame:
    labels = require(root / "labels.csv", "ELPV label file")
    normal, anomalous = [], []
    for number, line in enumerate(labels.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        where = f"{labels}, line {number}"
        if len(fields) != 3 or fields[2] not in CELL_TYPES:
            raise ValueError(f"{where}: expected '<image> <probability> <mono|poly>', got {line.strip()!r}")
        try:
            probability = float(fields[1])
        except ValueError:
            raise ValueError(f"{where}: defect probability {fields[1]!r} is not a number") from None
        image = require(root / fields[0], f"{where}: image")
        if probability == 0:
            normal.append(str(image))
        elif probability == 1:
            anomalous.append((str(image), fields[2]))
    if not normal or not anomalous:
        raise ValueError(f"{labels}: needs images of probability 0 and 1, found {len(normal)} and {len(anomalous)}")
    train, test = inctrl_split(normal)
    order = {path: i for i, path in enumerate(normal)}
    keep = (lambda items: items[:limit]) if limit else (lambda items: items)
    rows = [("elpv", "train", 0, "good", p, "") for p in keep(sorted(train, key=order.get))]
    rows += [("elpv", "test", 0, "good", p, "") for p in keep(sorted(test, key=order.get))]
    rows += [("elpv", "test", 1, cell_type, p, "") for p, cell_type in keep(anomalous)]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
