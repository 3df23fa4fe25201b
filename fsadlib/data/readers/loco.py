"""MVTec LOCO AD (Bergmann et al. 2022), the official archive unpacked:
``<category>/train/good``, ``<category>/validation/good``, ``<category>/test/{good, logical_anomalies,
structural_anomalies}/<nnn>.png`` and ``<category>/ground_truth/<defect>/<nnn>/<kkk>.png``: one folder per
anomalous image, one mask file per defect region. The mask of an image is the union (non-zero) of its
region files, written once as a 0/255 PNG under ``data/derived/loco/`` (the image's own file when it
has one region). Split: the official one; ``validation/good`` is left out unless
``validation_as_train=1`` adds it to train. Defects ``logical_anomalies`` / ``structural_anomalies``.
(The official sPRO metric, with its per-defect saturation thresholds, is not computed: the pixel
metrics treat each union mask as MVTec AD masks.)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, list_images
from fsadlib.data.readers.common import derived_dir, derived_file, read_array, save_png


def read_loco(root: Path, validation_as_train: int = 0) -> pd.DataFrame:
    categories = sorted(d for d in root.iterdir() if d.is_dir() and (d / "test").is_dir())
    if not categories:
        raise FileNotFoundError(f"{root}: no MVTec LOCO category folder (<category>/test)")
    out = derived_dir("loco", root)
    rows = []
    for folder in categories:
        category = folder.name
        train = list_images(folder / "train" / "good")
        train += list_images(folder / "validation" / "good") if int(validation_as_train) else []
        rows += [(category, "train", 0, "good", str(p), "") for p in train]
        for defect_dir in sorted(d for d in (folder / "test").iterdir() if d.is_dir()):
            defect = defect_dir.name
            for image in list_images(defect_dir):
                mask = "" if defect == "good" else _union_mask(out, category, image, folder / "ground_truth" / defect)
                rows.append((category, "test", int(defect != "good"), defect, str(image), mask))
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _union_mask(out: Path, category: str, image: Path, defect_gt: Path) -> str:
    regions = list_images(defect_gt / image.stem)
    if not regions:
        raise FileNotFoundError(f"anomalous image {image} has no mask: expected {defect_gt / image.stem}/000.png")
    if len(regions) == 1:
        return str(regions[0])
    target = derived_file(out, f"{category}_{defect_gt.name}_{image.stem}_mask", *regions)
    if not target.is_file():
        union = np.any([read_array(p, grey=True) > 0 for p in regions], axis=0)
        save_png(target, (union * 255).astype(np.uint8))
    return str(target)
