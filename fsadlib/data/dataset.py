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

from fsadlib.data.decoded import DecodedCache, default_cache, transform_key
from fsadlib.data.files import resolve_path
from fsadlib.data.geometry import DEFAULT_GEOMETRY, GEOMETRY_RULES, check_geometry, fit
from fsadlib.data.images import IMAGE_MODE_RULE, open_image, read_image
from fsadlib.data.images import image_size as header_size

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
    return normalise(chw(np.asarray(fit(image, image_size, geometry, Image.BICUBIC))), mean, std)


def normalise(pixels: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
              ) -> torch.Tensor:
    """uint8 ``[..., 3, S, S]`` -> float32 ``(x / 255 - mean) / std``, on the tensor's device (so a loader
    can ship uint8 and normalise on the GPU; the same float32 operations as the CPU path, bit for bit)."""
    x = pixels.float() / 255.0
    return (x - torch.tensor(mean, device=x.device).view(3, 1, 1)) / torch.tensor(std, device=x.device).view(3, 1, 1)


def chw(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``[S, S, 3]`` (any array, memory maps included) -> a new contiguous uint8 tensor ``[3, S, S]``."""
    return torch.from_numpy(np.array(pixels, np.uint8)).permute(2, 0, 1).contiguous()


def fitted_pixels(path: str | Path, image_size: int, geometry: str = DEFAULT_GEOMETRY,
                  cache: DecodedCache | None = None) -> np.ndarray:
    """The image at ``path`` read by the one loader (:func:`fsadlib.data.images.read_image`) and brought
    to ``S x S`` by ``geometry`` (PIL bicubic): uint8 ``[S, S, 3]``, through ``cache``
    (:mod:`fsadlib.data.decoded`, keyed by the mode rule, the geometry and S) when one is given."""
    check_geometry(geometry)

    def decode(source: Path) -> np.ndarray:
        return np.asarray(fit(read_image(source), image_size, geometry, Image.BICUBIC))

    if cache is None:
        return decode(path)
    key = transform_key("image", IMAGE_MODE_RULE, geometry, GEOMETRY_RULES[geometry], "PIL bicubic", image_size)
    return cache.get(path, key, decode)


def load_images(paths: Sequence[str | Path], image_size: int, mean: Sequence[float] = CLIP_MEAN,
                std: Sequence[float] = CLIP_STD, geometry: str = DEFAULT_GEOMETRY, use_cache: bool = True
                ) -> torch.Tensor:
    """Images (e.g. the k shots of a k-shot file) as one float32 ``[k, 3, S, S]`` tensor
    (:func:`fitted_pixels` through the checkout's decoded-image cache unless ``use_cache`` is False)."""
    if not paths:
        raise ValueError("load_images: empty list of paths")
    cache = default_cache() if use_cache else None
    return normalise(torch.stack([chw(fitted_pixels(p, image_size, geometry, cache)) for p in paths]), mean, std)


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


def fitted_mask(path: str | Path, image_path: str | Path, mask_size: int, geometry: str = DEFAULT_GEOMETRY,
                cache: DecodedCache | None = None) -> torch.Tensor:
    """:func:`load_mask` of mask ``path`` (checked against the size of ``image_path``) -> float32
    ``[M, M]``, through ``cache`` when one is given (stored as uint8 {0, 1})."""
    def decode(source: Path) -> np.ndarray:
        return load_mask(source, mask_size, header_size(image_path), geometry).numpy().astype(np.uint8)[..., None]

    pixels = decode(path) if cache is None else \
        cache.get(path, transform_key("mask", MASK_RULE, geometry, mask_size), decode)
    return torch.from_numpy(np.array(pixels[..., 0], np.float32))


class AnomalyDataset(Dataset):
    """Samples table rows as dicts: ``image`` float32 ``[3, S, S]`` (:func:`describe_transform` of
    ``geometry``; ``normalised=False``: the uint8 pixels ``[3, S, S]``, to :func:`normalise` on the
    device), ``mask`` float32 ``[M, M]`` (``MASK_RULE`` under the same geometry; ``M`` defaults to ``S``),
    ``label`` int, ``image_path``, ``category``, ``defect`` str. Images and masks are decoded once into
    the checkout's decoded-image cache (:mod:`fsadlib.data.decoded`) and read back from it, unless
    ``use_cache`` is False.
    """

    mask_rule = MASK_RULE

    def __init__(self, samples: pd.DataFrame, image_size: int, mask_size: int | None = None,
                 mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD,
                 geometry: str = DEFAULT_GEOMETRY, normalised: bool = True, use_cache: bool = True) -> None:
        self.samples = samples.reset_index(drop=True)
        self.image_size = image_size
        self.mask_size = mask_size or image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.geometry = check_geometry(geometry)
        self.image_transform = describe_transform(geometry)
        self.normalised = normalised
        self.cache = default_cache() if use_cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.samples.iloc[index]
        pixels = chw(fitted_pixels(row["image_path"], self.image_size, self.geometry, self.cache))
        if row["mask_path"]:
            mask = fitted_mask(row["mask_path"], row["image_path"], self.mask_size, self.geometry, self.cache)
        else:
            mask = torch.zeros(self.mask_size, self.mask_size)
        return {
            "image": normalise(pixels, self.mean, self.std) if self.normalised else pixels,
            "mask": mask,
            "label": int(row["label"]),
            "image_path": str(row["image_path"]),
            "category": str(row["category"]),
            "defect": str(row["defect"]),
        }
