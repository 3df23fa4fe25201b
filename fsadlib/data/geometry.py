"""Image geometry: how a W x H image (and its mask) becomes the S x S model input.

Two transforms (``GEOMETRIES``), applied identically to an image and its mask (only the resampling
filter differs: PIL bicubic, antialiased, for images; PIL nearest for binary masks):

- ``resize_crop`` (default; the public InCTRL, Bayes-PFL, KAG-prompt and FineGrainedAD pipelines,
  torchvision ``Resize(S)`` + ``CenterCrop(S)``): resize the short side to S keeping the aspect
  ratio, the long side to ``int(S * long / short)``; then crop the centred S x S window whose
  top-left corner is ``(round((w - S) / 2), round((h - S) / 2))``. The long side's borders are cut:
  on a 1500 x 1000 VisA image about 1/6 of the width on each side.
- ``squash``: resize straight to S x S (the aspect ratio is not kept; nothing is cut).

For square images both give the same pixels. The image at S and its mask at M (the evaluation
resolution) cover the same region of the original image under both transforms.
"""

from __future__ import annotations

from PIL import Image

GEOMETRY_RULES: dict[str, str] = {
    "resize_crop": "resize short side to S keeping aspect (long side int(S*long/short)), centre crop S x S",
    "squash": "resize to S x S (aspect ratio not kept, nothing cut)",
}
GEOMETRIES: tuple[str, ...] = tuple(GEOMETRY_RULES)
DEFAULT_GEOMETRY = "resize_crop"


def check_geometry(name: str, key: str = "geometry") -> str:
    """``name`` if it is a known transform, else ``KeyError`` naming the params key and the choices."""
    if name not in GEOMETRY_RULES:
        raise KeyError(f"unknown image transform {name!r} in params key '{key}'; choices: {list(GEOMETRIES)}")
    return name


def fit(image: Image.Image, size: int, geometry: str, resample: int) -> Image.Image:
    """``image`` (W x H) -> ``size x size`` by transform ``geometry`` with PIL filter ``resample``."""
    check_geometry(geometry)
    if geometry == "squash":
        return image.resize((size, size), resample)
    width, height = image.size
    resized = image.resize(short_side_size(width, height, size), resample)
    return resized.crop(centre_crop_box(*resized.size, size))


def short_side_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(W', H') with the short side ``size`` and the long side ``int(size * long / short)`` (torchvision)."""
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def centre_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """PIL box (left, top, right, bottom) of the centred ``size x size`` window (torchvision rounding)."""
    left, top = round((width - size) / 2.0), round((height - size) / 2.0)
    return left, top, left + size, top + size
