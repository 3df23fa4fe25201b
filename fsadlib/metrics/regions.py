"""Ground-truth regions: 8-connected components of each binary mask (MVTec AD definition).

Labelling runs on the host with ``scipy.ndimage.label`` and a 3 x 3 structuring element, on the
bounding box of each mask's defect pixels only (masks on CUDA are reduced to per-row / per-column
"any" flags on the device; only the boxes travel to the host and their labels back), so its cost
scales with the defect area, not with the image count or size. Regions never span two images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass
class Regions:
    """Region ids of every defect pixel, stored as one labelled box per anomalous image.

    boxes: (image index, row slice, column slice, int32 ids [h, w] on the masks' device);
           ids are global over the stack (1 ... R), 0 outside regions
    areas: [R] int64 pixel count of region r at index r - 1
    """

    boxes: list[tuple[int, slice, slice, torch.Tensor]]
    areas: np.ndarray

    @property
    def count(self) -> int:
        return len(self.areas)

    def weights(self, device: torch.device) -> torch.Tensor:
        """[R + 1] float64: 0 for the background, 1 / area(r) at index r."""
        return torch.from_numpy(np.concatenate([[0.0], 1.0 / self.areas])).to(device)


def label_regions(masks: torch.Tensor, rows_any: np.ndarray, cols_any: np.ndarray) -> Regions:
    """Label the 8-connected defect regions of binary ``masks`` [N, H, W] (nonzero = defect).

    ``rows_any`` [N, H] / ``cols_any`` [N, W] (host bool arrays) say which rows / columns of each
    mask hold a defect pixel; they locate the boxes without another pass over the masks.
    """
    boxes: list[tuple[int, slice, slice, torch.Tensor]] = []
    areas: list[np.ndarray] = []
    offset = 0
    for i in np.flatnonzero(rows_any.any(axis=1)):
        r = np.flatnonzero(rows_any[i])
        c = np.flatnonzero(cols_any[i])
        rs, cs = slice(r[0], r[-1] + 1), slice(c[0], c[-1] + 1)
        box = (masks[i, rs, cs] != 0).cpu().numpy()
        ids, n = ndimage.label(box, structure=_EIGHT)
        areas.append(np.bincount(ids.ravel(), minlength=n + 1)[1:])
        ids[ids > 0] += offset
        offset += n
        boxes.append((int(i), rs, cs, torch.from_numpy(ids).to(masks.device)))
    return Regions(boxes, np.concatenate(areas) if areas else np.zeros(0, dtype=np.int64))
