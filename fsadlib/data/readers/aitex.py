"""AITEX fabric defects (Silvestre-Blanes et al. 2019), the official archives unpacked:
``Defect_images/<nnnn>_<defect code>_<fabric>.png``, ``Mask_images/<same stem>_mask.png``,
``NODefect_images/<fabric folder>/<name>.png`` (a doubled folder, ``Defect_images/Defect_images``, as
in InCTRL's copy, is found too). Images are 4096 x 256 px grey.

Split rule of InCTRL's ``convert_AITEX.py``: every normal image is cut into 16 tiles of 256 x 256 px,
all normal, split 75/25 by ``train_test_split(test_size=0.25, random_state=42)`` in sorted (fabric
folder, file, tile) order (InCTRL: ``os.listdir`` order); a defect image is cut into
``ceil(width / height)`` tiles of 256 px width and only the tiles whose mask has a non-zero pixel are
kept, as anomalous test images named by the defect code (``002`` Broken_end ... ``036`` Weft_crack).
Tiles are written under ``data/derived/aitex/``. Category ``fabric``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fsadlib.data.files import ROW_COLUMNS, list_images
from fsadlib.data.images import image_size
from fsadlib.data.readers.common import cut_tiles, derived_dir, inctrl_split, read_array, require

DEFECTS = {"002": "Broken_end", "006": "Broken_yarn", "010": "Broken_pick", "016": "Weft_curling",
           "019": "Fuzzyball", "022": "Cut_selvage", "023": "Crease", "025": "Warp_ball", "027": "Knots",
           "029": "Contamination", "030": "Nep", "036": "Weft_crack"}
TILE = 256


def read_aitex(root: Path) -> pd.DataFrame:
    out = derived_dir("aitex", root)
    normal = []
    fabrics = sorted(d for d in require(_folder(root, "NODefect_images"), "AITEX folder").iterdir() if d.is_dir())
    for fabric in fabrics:
        for image in list_images(fabric):
            width, height = image_size(image)
            boxes = [(0, height, i * TILE, (i + 1) * TILE) for i in range(width // TILE)]
            normal += [tile for tile, _, _ in cut_tiles(out, f"{fabric.name}_{image.stem}", image, None, boxes)]
    defect_dir, mask_dir = _folder(root, "Defect_images"), _folder(root, "Mask_images")
    anomalous = []
    for image in list_images(require(defect_dir, "AITEX folder")):
        parts = image.stem.split("_")
        if len(parts) != 3 or parts[1] not in DEFECTS:
            raise ValueError(f"AITEX defect image {image}: expected <nnnn>_<defect code>_<fabric>.png with a code "
                             f"in {sorted(DEFECTS)}")
        label = read_array(require(mask_dir / f"{image.stem}_mask.png", f"mask of {image}"), grey=True)
        height, width = label.shape
        if image_size(image) != (width, height):
            raise ValueError(f"mask {mask_dir / image.stem}_mask.png is {(width, height)} but its image {image} is "
                             f"{image_size(image)} (width, height)")
        boxes = [(0, height, i * TILE, min((i + 1) * TILE, width)) for i in range(math.ceil(width / height))]
        anomalous += [(tile, mask, DEFECTS[parts[1]])
                      for tile, mask, bad in cut_tiles(out, image.stem, image, label, boxes) if bad]
    train, test = inctrl_split(normal)
    rows = [("fabric", "train", 0, "good", p, "") for p in train]
    rows += [("fabric", "test", 0, "good", p, "") for p in test]
    rows += [("fabric", "test", 1, defect, p, m) for p, m, defect in anomalous]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


def _folder(root: Path, name: str) -> Path:
    """``root/name``, or ``root/name/name`` when the archive was unpacked into a folder of its own name."""
    return root / name / name if (root / name / name).is_dir() else root / name
