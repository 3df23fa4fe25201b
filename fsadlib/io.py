"""Atomic writes: an interrupted run leaves the last good file, never a half-written one.

Every checkpoint, table and JSON the workbench writes goes through these helpers: the content is
written to a temporary file in the destination folder, flushed and fsynced, then ``os.replace``d
over the target (atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


@contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it over ``path``, else delete it.

    Use for writers that want a file name (``np.savez``, ``DataFrame.to_parquet`` ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(fh)`` on a binary temp file, then atomically move it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Atomically write ``obj`` as JSON (sorted keys, trailing newline)."""
    text = json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n"
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"JSON file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def save_torch(path: str | Path, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` to ``path``."""
    import torch

    return atomic_write(path, lambda fh: torch.save(obj, fh))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
