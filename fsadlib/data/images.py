"""The one image loader: any file Pillow opens -> 8-bit RGB by a documented rule, or an error naming the file.

Conversion rule (``IMAGE_MODE_RULE``), by Pillow mode of the opened file:

- ``RGB``: as stored.
- ``L`` / ``1`` (8-bit / 1-bit grey): the grey level copied to the three channels (1-bit: 0 or 255).
- ``I;16`` / ``I;16B`` / ``I;16L`` / ``I`` (16- or 32-bit integer grey, e.g. 16-bit PNG / TIFF):
  *scaled*, never clipped, from the 16-bit range to 8 bits, ``g8 = round(g16 * 255 / 65535)``, then
  copied to the three channels. ``I`` values outside ``[0, 65535]`` raise ``ValueError`` naming the
  file (their range is unknown, so no scale is right).
- ``F`` (32-bit float grey): ``ValueError`` naming the file (no defined range).
- ``P`` (palette): the palette's RGB colours (transparency dropped, as below).
- ``RGBA`` / ``LA`` / ``PA`` / ``RGBa``: the colour channels as stored, alpha dropped (what
  ``Image.convert("RGB")`` does, and what the public pipelines of the papers read).
- ``CMYK`` / ``YCbCr`` / ``LAB`` / ``HSV``: Pillow's ``convert("RGB")`` (CMYK: ``R = 255 - min(255, C + K)`` ...).
- 48-bit RGB PNGs are decoded by Pillow itself to 8-bit ``RGB`` (high byte of each 16-bit value: a
  scale by 1/257, rounded down, not a clip).

Too-large images: an image over Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``; Pillow
only warns between 1x and 2x that limit, here both are errors) raises ``ValueError`` naming the file
and the limit, before any pixel is decoded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsadlib.data.files import resolve_path

IMAGE_MODE_RULE = ("RGB as stored; L/1 grey copied to 3 channels; 16-bit grey (I;16*, I) scaled "
                   "round(g*255/65535), not clipped; P via its palette; alpha dropped; CMYK/YCbCr/LAB/HSV "
                   "by PIL convert('RGB'); F and out-of-range I refused")

_SIXTEEN_BIT = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_GREY = frozenset({"L", "1"})


def open_image(path: str | Path) -> Image.Image:
    """Open ``path`` (portable or absolute) lazily, refusing decompression bombs; errors name the file."""
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"image file not found: {resolved}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(resolved)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ValueError(f"image {resolved} is larger than Pillow's decompression-bomb limit "
                         f"(Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS} pixels): {err}") from err
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image {resolved}: {err}") from err


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file header (no pixel decoded); errors name the file."""
    with open_image(path) as img:
        return img.size


def read_image(path: str | Path) -> Image.Image:
    """The image at ``path`` as an 8-bit ``RGB`` PIL image by ``IMAGE_MODE_RULE``; errors name the file."""
    resolved = resolve_path(path)
    with open_image(resolved) as img:
        try:
            return to_rgb(img, resolved)
        except OSError as err:  # truncated or corrupt pixel data
            raise ValueError(f"unreadable image {resolved}: {err}") from err


def to_rgb(img: Image.Image, name: str | Path = "<image>") -> Image.Image:
    """``img`` converted to 8-bit ``RGB`` by ``IMAGE_MODE_RULE`` (``name`` is used in errors)."""
    mode = img.mode
    if mode in _GREY:
        return img.convert("L").convert("RGB")
    if mode in _SIXTEEN_BIT:
        values = np.asarray(img).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"image {name} (mode {mode}) has values in [{values.min()}, {values.max()}], "
                             "outside the 16-bit range [0, 65535]")
        grey = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        raise ValueError(f"image {name} is 32-bit float grey (mode F): no defined intensity range to convert")
    if mode in ("P", "PA"):
        return img.convert("RGBA").convert("RGB")
    return img.convert("RGB")
