"""RSDDs, rail surface defects (Gan et al. 2017), the official archive unpacked:
``Type-I RSDDs dataset/{Rail surface images, GroundTruth}/<name>.jpg`` (express rails, 160 px wide)
and ``Type-II RSDDs dataset/...`` (heavy-haul rails, 55 px wide). Every image holds a defect, so the
normal images are cut from them, as Bayes-PFL's "RSDD" crops do: each image is cut along its length
into square tiles of side = its width (a remainder shorter than that is dropped); a tile whose mask
(binarised ``> 128``: the masks are JPEG) has a pixel is anomalous, the others are normal. Split:
``balanced_split`` (every anomalous tile in test with as many normal tiles, drawn with seed 42; the
other normal tiles train) per type, the deterministic form of Bayes-PFL's random sampling (their own
draw is ``DATA_three.zip``, read with the ``bayes_pfl`` reader). Tiles are written under
``data/derived/rsdd/``. Categories ``express_rail`` (Type-I) and ``heavy_haul_rail`` (Type-II).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, list_images
from fsadlib.data.images import image_size
from fsadlib.data.readers.common import (
    balanced_split,
    binary_mask,
    cut_tiles,
    derived_dir,
    read_array,
    require,
)

TYPES = {"Type-I RSDDs dataset": "express_rail", "Type-II RSDDs dataset": "heavy_haul_rail"}


def read_rsdd(root: Path) -> pd.DataFrame:
    base = root / "RSDDs dataset" if (root / "RSDDs dataset").is_dir() else root
    present = [name for name in TYPES if (base / name).is_dir()]
    if not present:
        raise FileNotFoundError(f"{base}: no RSDDs folder {list(TYPES)}")
    out = derived_dir("rsdd", root)
    rows = []
    for folder in present:
        category, normal, anomalous = TYPES[folder], [], []
        images = list_images(require(base / folder / "Rail surface images", "RSDDs folder"))
        for image in images:
            label = binary_mask(read_array(require(base / folder / "GroundTruth" / image.name, f"mask of {image}"),
                                           grey=True))
            height, width = label.shape
            if image_size(image) != (width, height):
                raise ValueError(f"mask of {image} is {(width, height)} but the image is {image_size(image)}")
            boxes = [(i * width, (i + 1) * width, 0, width) for i in range(height // width)]
            for tile, mask, bad in cut_tiles(out, f"{category}_{image.stem}", image, label, boxes):
                (anomalous.append((tile, mask)) if bad else normal.append(tile))
        train, test = balanced_split(normal, len(anomalous))
        rows += [(category, "train", 0, "good", p, "") for p in train]
        rows += [(category, "test", 0, "good", p, "") for p in test]
        rows += [(category, "test", 1, "defect", p, m) for p, m in anomalous]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)
