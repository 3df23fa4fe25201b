"""Bayes-PFL training data as the public code makes it: augment at native resolution, then resize.

Per training item (the public ``MyDataset.__getitem__``), from a generator seeded by
``(seed, index, visit)``:

1. With probability ``mosaic_prob`` the item becomes a 2 x 2 mosaic of four random anomalous images of
   its category with their masks (tile ``i`` at row ``i // 2``, column ``i % 2``; every tile at the
   first image's native size, 2H x 2W in all), labelled anomalous (APRIL-GAN's trick).
2. With ``enabled``, at native resolution (the mosaic included), torchvision ``transforms.v2`` on a
   ``tv_tensors.Image`` (float [0, 1]) and its ``tv_tensors.Mask``, so the mask gets exactly the
   geometry of its image (images bilinear, masks nearest):
   - rotate by ``U(-rotate_degrees, rotate_degrees)`` with reflected borders (OpenCV's
     ``BORDER_REFLECT_101`` = torch ``reflect``), p ``rotate_prob``;
   - rotate by ``k * 90`` degrees, ``k ~ U{0..3}`` (exact, ``torch.rot90``), p ``rot90_prob``;
   - ``x -> clip(alpha x + beta)``, ``alpha ~ 1 + U(-contrast, contrast)``,
     ``beta ~ U(-brightness, brightness)`` (albumentations' RandomBrightnessContrast by max), p
     ``brightness_contrast_prob``;
   - ``x -> clip(x + n)``, ``n ~ N(0, sigma^2)`` per pixel and channel, ``(255 sigma)^2 ~ U(noise_var)``
     (albumentations' GaussNoise on the 0-255 scale), p ``noise_prob``;
   - one of {3 x 3 box blur, ColorJitter(0.2, 0.2, 0.2, 0.2), Gaussian blur with an odd kernel
     ``K ~ U{3, 5, 7}`` and ``sigma = 0.3 ((K - 1) / 2 - 1) + 0.8`` (OpenCV's rule)}, p ``blur_prob``.
3. Back to uint8, then the workbench's image transform (``fsadlib.data.describe_transform`` of
   ``geometry``: PIL bicubic, antialiased) to S x S; the mask by the same geometry with ``mask_resize``
   (``nearest``, or ``bilinear`` + 0.5 threshold as the public code:
   ``fsadlib.data.dataset.resize_binary_mask``).

Torch's global RNG is left as it was (the transforms draw inside ``torch.random.fork_rng``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fsadlib.data.geometry import DEFAULT_GEOMETRY, check_geometry


@dataclass(frozen=True)
class BayesPFLAugmentConfig:
    """The ``bayes_pfl.augment`` params section (defaults = the public albumentations pipeline)."""

    enabled: int = 0                          # 1 = augment every training item (the paper)
    rotate_degrees: float = 30.0
    rotate_prob: float = 0.5
    rot90_prob: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    brightness_contrast_prob: float = 0.5
    noise_var: tuple[float, float] = (10.0, 50.0)   # variance on the 0-255 scale
    noise_prob: float = 0.5
    blur_prob: float = 0.5                    # one of box blur 3 / colour jitter / Gaussian blur
    mask_resize: str = "nearest"              # nearest | bilinear (the public code: bilinear, > 0.5)

    def __post_init__(self) -> None:
        from fsadlib.data.dataset import MASK_RESIZE_RULES

        if self.mask_resize not in MASK_RESIZE_RULES:
            raise ValueError(f"bayes_pfl.augment.mask_resize must be one of {MASK_RESIZE_RULES}, "
                             f"got {self.mask_resize!r}")
        for name in ("rotate_prob", "rot90_prob", "brightness_contrast_prob", "noise_prob", "blur_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"bayes_pfl.augment.{name} must lie in [0, 1], got {getattr(self, name)!r}")


class ReflectRotate(v2.Transform):
    """Rotate by ``U(-degrees, degrees)`` about the centre, borders filled by reflection.

    The input is reflect-padded by ``ceil((W/2) cos a + (H/2) sin a - W/2) + 1`` columns (rows
    likewise, ``a`` the largest angle), rotated (images bilinear, masks nearest) and centre-cropped back.
    """

    def __init__(self, degrees: float) -> None:
        super().__init__()
        self.degrees = float(degrees)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"angle": float(torch.empty(1).uniform_(-self.degrees, self.degrees))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        height, width = inpt.shape[-2:]
        a = math.radians(self.degrees)
        pad_x = math.ceil(width / 2 * math.cos(a) + height / 2 * math.sin(a) - width / 2) + 1
        pad_y = math.ceil(height / 2 * math.cos(a) + width / 2 * math.sin(a) - height / 2) + 1
        padded = TF.pad(inpt, [pad_x, pad_y, pad_x, pad_y], padding_mode="reflect")
        rotated = TF.rotate(padded, params["angle"], interpolation=v2.InterpolationMode.BILINEAR)
        return TF.center_crop(rotated, [height, width])


class RandomRotate90(v2.Transform):
    """Rotate by ``k * 90`` degrees, ``k ~ U{0, 1, 2, 3}``, exactly (``torch.rot90``)."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        return {"k": int(torch.randint(4, ()))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt)


class Photometric(v2.Transform):
    """Base of the image-only transforms: masks pass through unchanged."""

    _transformed_types = (tv_tensors.Image,)


class BrightnessContrast(Photometric):
    """``x -> clip(alpha x + beta, 0, 1)``, ``alpha ~ 1 + U(-c, c)``, ``beta ~ U(-b, b)``."""

    def __init__(self, brightness: float, contrast: float) -> None:
        super().__init__()
        self.brightness, self.contrast = brightness, contrast

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = 1 + float(torch.empty(1).uniform_(-self.contrast, self.contrast))
        return {"alpha": alpha, "beta": float(torch.empty(1).uniform_(-self.brightness, self.brightness))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap((inpt * params["alpha"] + params["beta"]).clamp(0, 1), like=inpt)


class GaussNoise(Photometric):
    """``x -> clip(x + n, 0, 1)``, ``n ~ N(0, var / 255^2)`` per pixel and channel, ``var ~ U(var_range)``."""

    def __init__(self, var_range: tuple[float, float]) -> None:
        super().__init__()
        self.var_range = var_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        var = float(torch.empty(1).uniform_(*self.var_range))
        return {"sigma": math.sqrt(var) / 255.0}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return tv_tensors.wrap((inpt + params["sigma"] * torch.randn_like(inpt)).clamp(0, 1), like=inpt)


class BoxBlur(Photometric):
    """Mean over a ``size x size`` window, reflected borders (OpenCV ``blur``)."""

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = size

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        r = self.size // 2
        x = F.pad(inpt.reshape(-1, 1, *inpt.shape[-2:]), [r, r, r, r], mode="reflect")
        out = F.avg_pool2d(x, self.size, stride=1).reshape(inpt.shape)
        return tv_tensors.wrap(out, like=inpt)


class OpenCVGaussianBlur(Photometric):
    """Gaussian blur with an odd kernel ``K ~ U{3..7}`` and OpenCV's default ``sigma`` for ``K``."""

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        k = int(torch.randint(1, 4, ())) * 2 + 1
        return {"kernel": k, "sigma": 0.3 * ((k - 1) * 0.5 - 1) + 0.8}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.gaussian_blur(inpt, [params["kernel"]] * 2, [params["sigma"]] * 2)


def bayes_pfl_transform(cfg: BayesPFLAugmentConfig) -> v2.Transform:
    """The public albumentations pipeline (module docstring, step 2) as one ``v2.Compose``."""
    return v2.Compose([
        v2.RandomApply([ReflectRotate(cfg.rotate_degrees)], p=cfg.rotate_prob),
        v2.RandomApply([RandomRotate90()], p=cfg.rot90_prob),
        v2.RandomApply([BrightnessContrast(cfg.brightness, cfg.contrast)], p=cfg.brightness_contrast_prob),
        v2.RandomApply([GaussNoise(cfg.noise_var)], p=cfg.noise_prob),
        v2.RandomApply([v2.RandomChoice([BoxBlur(3), v2.ColorJitter(0.2, 0.2, 0.2, 0.2), OpenCVGaussianBlur()])],
                       p=cfg.blur_prob),
    ])


def augment_pair(image: torch.Tensor, mask: torch.Tensor, transform: v2.Transform, seed: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """``transform`` on float ``[3, H, W]`` in [0, 1] and ``[H, W]`` mask, drawn from ``seed`` only."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    return out_image.as_subclass(torch.Tensor), out_mask.as_subclass(torch.Tensor)


def mosaic(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Four uint8 ``[H_i, W_i, 3]`` images and ``[H_i, W_i]`` masks -> one 2 x 2 mosaic ``[2H, 2W(, 3)]``
    at the first image's native size (other sizes resized to it: PIL bicubic / nearest)."""
    height, width = masks[0].shape
    tiles_i, tiles_m = [], []
    for img, msk in zip(images, masks):
        if msk.shape != (height, width):
            img = np.asarray(Image.fromarray(img).resize((width, height), Image.BICUBIC))
            msk = np.asarray(Image.fromarray(msk).resize((width, height), Image.NEAREST))
        tiles_i.append(img)
        tiles_m.append(msk)
    image = np.concatenate([np.concatenate(tiles_i[:2], 1), np.concatenate(tiles_i[2:], 1)], 0)
    mask = np.concatenate([np.concatenate(tiles_m[:2], 1), np.concatenate(tiles_m[2:], 1)], 0)
    return image, mask


class AugmentedDataset(Dataset):
    """Samples table rows as ``fsadlib.data.AnomalyDataset`` items, made as the module docstring says.

    Item ``index`` at its ``v``-th visit draws from ``numpy.random.default_rng([seed, index, v])``, so
    the same seed and order of access give the same items, whatever else uses the global RNGs.
    """

    def __init__(self, samples: pd.DataFrame, image_size: int, mean: Sequence[float], std: Sequence[float],
                 augment: BayesPFLAugmentConfig, mosaic_prob: float, seed: int,
                 geometry: str = DEFAULT_GEOMETRY) -> None:
        self.samples = samples.reset_index(drop=True)
        self.geometry = check_geometry(geometry)
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.augment, self.mosaic_prob, self.seed = augment, mosaic_prob, seed
        self.transform = bayes_pfl_transform(augment) if augment.enabled else None
        anomalous = self.samples[self.samples["label"] == 1]
        self.pools = {c: list(idx) for c, idx in anomalous.groupby("category").groups.items()}
        self.visits: dict[int, int] = defaultdict(int)

    def __len__(self) -> int:
        return len(self.samples)

    def native(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``index`` at native size: uint8 ``[H, W, 3]`` image, uint8 ``[H, W]`` {0, 1} mask."""
        from fsadlib.data.dataset import read_binary_mask, read_image

        row = self.samples.iloc[index]
        image = read_image(row["image_path"])
        if row["mask_path"]:
            mask = read_binary_mask(row["mask_path"], image.size)
        else:
            mask = np.zeros(image.size[::-1], np.uint8)
        return np.array(image), mask

    def __getitem__(self, index: int) -> dict[str, Any]:
        from fsadlib.data.dataset import image_tensor, resize_binary_mask

        row = self.samples.iloc[index]
        rng = np.random.default_rng([self.seed, index, self.visits[index]])
        self.visits[index] += 1
        pool = self.pools.get(row["category"], [])
        label, defect = int(row["label"]), str(row["defect"])
        if pool and rng.random() < self.mosaic_prob:
            image, mask = mosaic(*zip(*(self.native(int(j)) for j in rng.choice(pool, size=4))))
            label, defect = 1, "mosaic"
        else:
            image, mask = self.native(index)
        if self.transform is not None:
            x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
            x, m = augment_pair(x, torch.from_numpy(mask), self.transform, int(rng.integers(2**63)))
            image = (x.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            mask = m.numpy()
        return {
            "image": image_tensor(Image.fromarray(image), self.image_size, self.mean, self.std, self.geometry),
            "mask": resize_binary_mask(mask, self.image_size, self.augment.mask_resize, self.geometry),
            "label": label,
            "image_path": str(row["image_path"]),
            "category": str(row["category"]),
            "defect": defect,
        }
