"""File helpers of the data layer: image listing, header reads, portable paths.

Paths in samples tables and k-shot files are *portable*: relative to the repository root (POSIX
separators) when the file lies inside it, absolute otherwise. :func:`resolve_path` reads both forms,
so notebooks (run with any working directory) and moved clones find the files.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from fsadlib.paths import repo_root

#: columns a reader returns (the samples table without ``dataset``)
ROW_COLUMNS: list[str] = ["category", "split", "label", "defect", "image_path", "mask_path"]
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), sorted by name; [] if absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file header; ``FileNotFoundError``/``ValueError`` naming the file."""
    resolved = resolve_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"image file not found: {resolved}")
    try:
        with Image.open(resolved) as img:
            return img.size
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image {resolved}: {err}") from err


def portable_path(path: str | Path) -> str:
    """``path`` relative to the repo root (POSIX) when inside it, else absolute.

    Symbolic links are not resolved (the path stays as configured; note that :mod:`fsadlib.data.links`
    refuses links under ``data/real``, which DVC cannot track).
    """
    absolute = Path(os.path.abspath(path))
    try:
        return absolute.relative_to(repo_root()).as_posix()
    except (ValueError, FileNotFoundError):
        return str(absolute)


def resolve_path(path: str | Path) -> Path:
    """An absolute path as is; a relative one under the repo root (the form :func:`portable_path` writes)."""
    path = Path(path)
    return path if path.is_absolute() else repo_root() / path
