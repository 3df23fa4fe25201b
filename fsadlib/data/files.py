"""File helpers of the data layer: image listing, portable paths, name and path checks.

Paths in samples tables and k-shot files are *portable*: relative to the repository root (POSIX
separators) when the file lies inside it, absolute otherwise. :func:`resolve_path` reads both forms,
so notebooks (run with any working directory) and moved clones find the files.

Category and data-set names become folder names (``data/shots/<dataset>/<category>/``,
``data/captions/<dataset>/<category>.json``, ``results/...``), so :func:`check_name` accepts only a
plain name: no path separator, not ``.`` or ``..``, not empty. :func:`outside_root` lists the paths
of a table that leave a data set's root (``os.path.abspath``: ``..`` and absolute paths are caught;
symbolic links the user placed inside the root are followed as the user set them up).
:func:`files_fingerprint` summarises files by path, size and modification time.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from fsadlib.paths import repo_root

#: columns a reader returns (the samples table without ``dataset``)
ROW_COLUMNS: list[str] = ["category", "split", "label", "defect", "image_path", "mask_path"]
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix, case-insensitive), sorted by name; [] if absent."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


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


def check_name(value: object, what: str, where: str) -> str:
    """``value`` when it is a plain folder name, else ``ValueError`` naming ``where`` (reader and
    file), ``what`` (category, dataset) and the value."""
    bad = (not isinstance(value, str) or value in ("", ".", "..")
           or any(sep in value for sep in ("/", "\\", "\0")) or os.path.isabs(value))
    if bad:
        raise ValueError(f"{where}: {what} name {value!r} is not a plain folder name (no path separators, "
                         "not '.', '..' or empty); it would put files outside data/ and results/")
    return value


def outside_root(paths: Iterable[str], root: str | Path) -> list[str]:
    """The non-empty ``paths`` that do not lie under ``root`` once made absolute and normalised."""
    base = os.path.abspath(root)
    return [p for p in paths if p and os.path.commonpath([base, os.path.abspath(resolve_path(p))]) != base]


def files_fingerprint(paths: Iterable[str | Path]) -> str:
    """sha1 over (path, size, mtime in ns) of every non-empty path, in the given order (a missing
    file enters as ``missing``; whoever reads it reports it)."""
    digest = hashlib.sha1()
    for path in paths:
        if not path:
            continue
        resolved = resolve_path(path)
        stat = f"{resolved.stat().st_size}\0{resolved.stat().st_mtime_ns}" if resolved.is_file() else "missing"
        digest.update(f"{path}\0{stat}\n".encode())
    return digest.hexdigest()
