"""Images and masks as tensors: geometry, normalisation and the mask rule recorded with every result.

Image transform (:func:`describe_transform`): the file is read by the one loader
(:func:`fsadlib.data.images.read_image`, ``IMAGE_MODE_RULE``: 16-bit grey scaled, palette, CMYK,
alpha ...), brought to ``S x S`` by a geometry of :mod:`fsadlib.data.geometry` (``resize_crop``, the
papers' default: short side to S + centre crop, PIL bicubic antialiased; or ``squash``), then
``x -> (x / 255 - mean) / std`` (the encoder's mean/std; OpenAI CLIP by default). Result float32
``[3, S, S]``. Real data sets are not square (VisA images are about 1500 x 1000), so the geometry
decides which pixels are scored: it is recorded beside every number.

Mask rule (``MASK_RULE``): a mask pixel is anomalous when its value (its palette index for palette
PNGs, its grey level for colour files) is non-zero (VisA stores instance ids, MVTec 255), at the mask's
native size, which must equal its image's; the binary mask goes through the image's geometry to
``M x M`` with PIL nearest (pixel centres), then is thresholded at 0.5, giving float32 ``{0, 1}``
``[M, M]``. A normal image gets zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from fsadlib.data.files import resolve_path
from fsadlib.data.geometry import DEFAULT_GEOMETRY, GEOMETRY_RULES, check_geometry, fit
from fsadlib.data.images import IMAGE_MODE_RULE, open_image, read_image

#: OpenAI CLIP normalisation (equal to ``open_clip.OPENAI_DATASET_MEAN`` / ``_STD``)
CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
MASK_RULE = "nonzero -> 1 at native size, the image's geometry with PIL nearest to MxM, threshold 0.5"


def describe_transform(geometry: str = DEFAULT_GEOMETRY) -> str:
    """The image transform of ``geometry`` in words (recorded with every result)."""
    return (f"{IMAGE_MODE_RULE}; {check_geometry(geometry)}: {GEOMETRY_RULES[geometry]} (PIL bicubic); "
            "(x/255 - mean)/std with the encoder's mean/std")


def image_tensor(image: Image.Image, image_size: int, mean: Sequence[float] = CLIP_MEAN,
                 std: Sequence[float] = CLIP_STD, geometry: str = DEFAULT_GEOMETRY) -> torch.Tensor:
    """The image transform (:func:`describe_transform`) of an RGB PIL image -> float32 ``[3, S, S]``."""
    resized = fit(image, image_size, geometry, Image.BICUBIC)
    x = torch.from_numpy(np.asarray(resized, np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def load_images(paths: Sequence[str | Path], image_size: int, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD, geometry: str = DEFAULT_GEOMETRY) -> torch.Tensor:
    """Images (e.g. the k shots of a k-shot file) as one float32 ``[k, 3, S, S]`` tensor."""
    if not paths:
        raise ValueError("load_images: empty list of paths")
    return torch.stack([image_tensor(read_image(p), image_size, mean, std, geometry) for p in paths])


def read_binary_mask(path: str | Path, image_size_wh: tuple[int, int] | None = None) -> np.ndarray:
    """The mask file at native size as uint8 ``[H, W]`` in {0, 1} (non-zero -> 1, ``MASK_RULE``).

    ``image_size_wh`` (the image's (width, height)) is checked against the mask's size.
    """
    resolved = resolve_path(path)
    with open_image(resolved) as img:
        try:
            # label-style modes (1, L, P, I, I;16) keep their raw values; colour masks go to grey
            values = np.asarray(img.convert("L") if img.mode in ("RGB", "RGBA", "LA", "CMYK", "YCbCr") else img)
        except OSError as err:
            raise ValueError(f"unreadable mask {resolved}: {err}") from err
    if image_size_wh is not None and values.shape[::-1] != tuple(image_size_wh):
        raise ValueError(f"mask {resolved} is {values.shape[::-1]} but its image is {tuple(image_size_wh)} "
                         "(width, height)")
    return (values != 0).astype(np.uint8)


#: mask resize rules: PIL nearest (pixel centres), or PIL bilinear (antialiased when shrinking) as the
#: public Bayes-PFL / APRIL-GAN code (torchvision ``Resize`` of the 0/255 mask); both thresholded at 0.5
MASK_RESIZE_RULES = ("nearest", "bilinear")


def resize_binary_mask(binary: np.ndarray, mask_size: int, rule: str = "nearest",
                       geometry: str = DEFAULT_GEOMETRY) -> torch.Tensor:
    """uint8 ``[H, W]`` {0, 1} -> float32 ``[M, M]`` {0, 1}: 0/255 image, the image's ``geometry``
    (:mod:`fsadlib.data.geometry`) with PIL ``rule`` resampling, ``> 0.5``."""
    if rule not in MASK_RESIZE_RULES:
        raise ValueError(f"mask resize rule must be one of {MASK_RESIZE_RULES}, got {rule!r}")
    image = Image.fromarray(binary.astype(np.uint8) * 255)
    resized = fit(image, mask_size, geometry, Image.NEAREST if rule == "nearest" else Image.BILINEAR)
    return torch.from_numpy((np.asarray(resized, np.float32) / 255.0 > 0.5).astype(np.float32))


def load_mask(path: str | Path, mask_size: int, image_size_wh: tuple[int, int] | None = None,
              geometry: str = DEFAULT_GEOMETRY) -> torch.Tensor:
    """``MASK_RULE`` applied to the mask file -> float32 ``[M, M]`` in {0, 1}.

    ``image_size_wh`` (the image's (width, height)) is checked against the mask's size; ``geometry``
    must be the image's (:mod:`fsadlib.data.geometry`) so that mask and image cover the same region.
    """
    return resize_binary_mask(read_binary_mask(path, image_size_wh), mask_size, "nearest", geometry)


class AnomalyDataset(Dataset):
    """Samples table rows as dicts: ``image`` float32 ``[3, S, S]`` (:func:`describe_transform` of
    ``geometry``), ``mask`` float32 ``[M, M]`` (``MASK_RULE`` under the same geometry; ``M`` defaults
    to ``S``), ``label`` int, ``image_path``, ``category``, ``defect`` str.
    """

    mask_rule = MASK_RULE

    def __init__(self, samples: pd.DataFrame, image_size: int, mask_size: int | None = None,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 geometry: str = DEFAULT_GEOMETRY) -> None:
        self.samples = samples.reset_index(drop=True)
        self.image_size = image_size
        self.mask_size = mask_size or image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.geometry = check_geometry(geometry)
        self.image_transform = describe_transform(geometry)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.samples.iloc[index]
        image = read_image(row["image_path"])
        if row["mask_path"]:
            mask = load_mask(row["mask_path"], self.mask_size, image.size, self.geometry)
        else:
            mask = torch.zeros(self.mask_size, self.mask_size)
        return {
            "image": image_tensor(image, self.image_size, self.mean, self.std, self.geometry),
            "mask": mask,
            "label": int(row["label"]),
            "image_path": str(row["image_path"]),
            "category": str(row["category"]),
            "defect": str(row["defect"]),
        }
