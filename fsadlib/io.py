"""Atomic writes, safe checkpoint loads and folder locks.

Every checkpoint, table and JSON the workbench writes goes through these helpers: the content is
written to a temporary file in the destination folder, flushed and fsynced, then ``os.replace``d
over the target (atomic on POSIX); a failed write (a full disk ...) names the file it was writing.

Checkpoints hold tensors and plain data only (dicts, lists, tuples, str, int, float, bool, None) and
are read with ``torch.load(weights_only=True)`` by :func:`load_torch`: a file carrying pickled
objects (which could run code when loaded) is refused with an error naming it.

:func:`locked` holds an exclusive ``fcntl`` lock on ``<folder>/.lock`` while a process writes a
results folder, so two writers of the same folder run one after the other.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import pickle
import sys
import tempfile
import zipfile
from collections import OrderedDict
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
    except OSError as err:
        if err.errno is None or err.filename is not None:
            raise
        raise OSError(err.errno, f"{err.strerror} while writing {path}", str(path)) from err
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
    """Atomically ``torch.save`` ``obj`` to ``path``; ``obj`` must be tensors and plain data (else
    ``TypeError`` naming the offending entry), so :func:`load_torch` can read it back."""
    import torch

    _check_plain(obj, str(path))
    return atomic_write(path, lambda fh: torch.save(obj, fh))


def file_sha1(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha1 of a file's bytes (hex)."""
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch(path: str | Path, map_location: str | Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain data only.

    A missing file raises ``FileNotFoundError``; a truncated or corrupt file, or one carrying pickled
    objects (refused: unpickling them could run code), raises ``ValueError`` naming the file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused to load: it is corrupt or truncated, or it holds pickled objects "
                         "beyond tensors and plain data (loading those could run code)") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else "end of file"
        raise ValueError(f"{path}: unreadable checkpoint, corrupt or truncated ({type(err).__name__}: {reason})") \
            from err


@contextmanager
def locked(folder: str | Path) -> Iterator[Path]:
    """Hold an exclusive lock on ``<folder>/.lock`` (created if needed) for the ``with`` block.

    Another process holding it makes this one wait (a message on stderr says which lock file); the
    lock is released when the block ends or the process dies.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / ".lock"
    with open(lock_file, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            print(f"waiting for {lock_file}: another process is writing {folder}", file=sys.stderr)
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield lock_file
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` at the first value of ``obj`` that is not a tensor or plain data."""
    import torch

    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:  # exact: numpy scalars subclass float
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if type(key) not in _PLAIN:
                raise TypeError(f"{where}: dict key {key!r} is a {type(key).__name__}, not plain data")
            _check_plain(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    else:
        raise TypeError(f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} is not a tensor or plain "
                        "data; checkpoints hold only those (they load with weights_only=True)")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
