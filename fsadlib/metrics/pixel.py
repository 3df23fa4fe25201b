"""Pixel-level AUROC, AP, F1-max and the exact MVTec AD AUPRO, all four from one sort of the pixels.

Memory (the caller's maps and masks not counted):
- 4 B/pixel, the int32 ``~o(s)`` of every pixel, sorted in place (on CUDA in runs of 2^26 pixels);
- at most ``BYTES_PER_DEFECT_PIXEL`` per defect pixel: their int64 keys, sorted, and the sweep over
  them (about 170 B measured on CPU when every defect pixel has a score of its own, the worst case);
- fixed temporaries: at most 24 B per pixel of a block of the blocked passes (about 0.1 GB on CPU,
  1.5 GB on CUDA), and on CUDA those of ``torch.sort`` for one run (32 B per pixel of it: 2 GB).
No float64 copy of the pixels: scores are compared as float32 bit patterns. Masks go to the host only
as their defects' bounding boxes (labelling).
Before allocating, the need is checked against the free memory of the device (``MemAvailable`` on
the host, ``cudaMemGetInfo`` on CUDA) and a ``MemoryError`` says how much is missing, so a call that
cannot fit fails at once instead of being killed: evaluate at a lower resolution, or per category.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fsadlib.metrics.inputs import as_tensor, check_binary
from fsadlib.metrics.regions import Regions, label_regions
from fsadlib.metrics.sweep import (
    SORT_TEMP_BYTES,
    check_fpr_limit,
    descending_bits,
    positive_keys,
    sort_bits_,
    sweep,
)

BYTES_PER_PIXEL = {"cpu": 4, "cuda": 4}
BYTES_PER_DEFECT_PIXEL = 192
#: pixels per block of the mask check and of the int32 encoding; fixed temporaries in bytes
_BLOCK = {"cpu": 1 << 22, "cuda": 1 << 26}
_OVERHEAD = {kind: 24 * _BLOCK[kind] + SORT_TEMP_BYTES[kind] for kind in _BLOCK}


def pixel_metrics(maps: Any, masks: Any, fpr_limit: float = 0.3) -> dict[str, float]:
    """{"auroc", "ap", "f1_max", "aupro"} of anomaly maps [N, H, W] against binary masks [N, H, W].

    AUROC / AP / F1-max equal scikit-learn's on the flattened pixels; AUPRO is the MVTec AD
    definition (``pro_curve_util.compute_pro`` + ``trapezoid(x_max=fpr_limit) / fpr_limit``):
    regions are the 8-connected components of each mask, PRO(t) the mean over regions of the
    fraction of the region scoring >= t, FPR(t) over all defect-free pixels (normal images too),
    the curve starts at (0, 0), is interpolated at ``fpr_limit`` and divided by it, so it is <= 1.
    Runs where ``maps`` live (CPU, or CUDA for CUDA tensors); maps are compared as float32.
    NaN where undefined: AUROC without both classes, AP / F1-max without defect pixels, AUPRO
    without regions or without defect-free pixels. Formulas: :mod:`fsadlib.metrics.sweep`.
    """
    fpr_limit = check_fpr_limit(fpr_limit)
    m = as_tensor(maps, "maps")
    g = as_tensor(masks, "masks").to(m.device)
    if m.ndim == 2 and g.ndim == 2:
        m, g = m.unsqueeze(0), g.unsqueeze(0)
    if m.ndim != 3 or g.shape != m.shape or m.numel() == 0:
        raise ValueError(f"maps {tuple(m.shape)} and masks {tuple(g.shape)} must be equal, "
                         "non-empty [N, H, W]")
    kind = "cuda" if m.device.type == "cuda" else "cpu"
    n_img, h, w = m.shape
    step = max(1, _BLOCK[kind] // (h * w))

    rows_any = torch.empty(n_img, h, dtype=torch.bool, device=m.device)
    cols_any = torch.empty(n_img, w, dtype=torch.bool, device=m.device)
    for lo in range(0, n_img, step):
        defect = check_binary(g[lo:lo + step], "masks")
        rows_any[lo:lo + step], cols_any[lo:lo + step] = defect.any(2), defect.any(1)
    regions = label_regions(g, rows_any.cpu().numpy(), cols_any.cpu().numpy())
    check_memory(m.numel(), int(regions.areas.sum()), m.device)

    bits = torch.empty(m.numel(), dtype=torch.int32, device=m.device)
    for lo in range(0, n_img, step):
        descending_bits(m[lo:lo + step].reshape(-1), out=bits[lo * h * w:(lo + step) * h * w])
    pos_keys = defect_keys(bits.view(n_img, h, w), regions)
    r = sweep(sort_bits_(bits), pos_keys, regions.weights(m.device), fpr_limit)
    return {"auroc": r.auroc, "ap": r.ap, "f1_max": r.f1_max, "aupro": r.aupro}


def defect_keys(grid: torch.Tensor, regions: Regions) -> torch.Tensor:
    """Sorted int64 keys [P] of the defect pixels, ``~o(s) << 32 | region id``, read from the
    ``descending_bits`` grid [N, H, W] inside the labelled boxes only (never a pass over all pixels)."""
    bits, ids = [], []
    for i, rs, cs, box_ids in regions.boxes:
        inside = box_ids > 0
        bits.append(grid[i, rs, cs][inside])
        ids.append(box_ids[inside])
    if not bits:
        return torch.empty(0, dtype=torch.int64, device=grid.device)
    return positive_keys(torch.cat(bits), torch.cat(ids))


def check_memory(n_pixels: int, n_defect: int, device: torch.device) -> None:
    """``MemoryError`` when ``n_pixels`` (``n_defect`` of them defects) need more than ``device`` has."""
    kind = "cuda" if device.type == "cuda" else "cpu"
    need = BYTES_PER_PIXEL[kind] * n_pixels + BYTES_PER_DEFECT_PIXEL * n_defect + _OVERHEAD[kind]
    free = torch.cuda.mem_get_info(device)[0] if kind == "cuda" else available_host_memory()
    if need > free:
        raise MemoryError(
            f"pixel_metrics needs about {need / 2**30:.2f} GiB on {device} "
            f"({BYTES_PER_PIXEL[kind]} B/pixel x "
            f"{n_pixels:,} pixels + {BYTES_PER_DEFECT_PIXEL} B x {n_defect:,} defect pixels) but only "
            f"{free / 2**30:.2f} GiB are free; evaluate fewer pixels at once (per category, or at a lower "
            "evaluation resolution)")


def available_host_memory() -> int:
    """Bytes the host can still allocate without swapping (``MemAvailable``; free pages otherwise)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
